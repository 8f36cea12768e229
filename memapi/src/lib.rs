//! An in-memory Kubernetes API server for controller tests, reached through a
//! real [`kube::Client`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::core::v1::Secret;
//! let server = cellplane_memapi::ApiServer::new();
//! let client = server.client();
//! let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "default");
//! let _ = secrets.list(&Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! The server speaks the apiserver's HTTP/JSON protocol as a tower `Service`, so
//! everything built on kube (typed and dynamic `Api`, `kube::runtime` watchers,
//! reflectors, `Controller`, the finalizer helper, `Recorder`, Lease-based leader
//! election) runs against it unchanged.
//!
//! [`ApiServer::serve`] also serves the same API over plain HTTP/1.1 on a loopback
//! socket, for kubectl or a client built from a kube `Config`.
//!
//! It reports itself as Kubernetes 1.37, the version its reference tests compare it with
//! (see Fidelity). Built against kube 5 and k8s-openapi 0.29 with its `v1_33` feature (the
//! earliest API version 0.29 offers, chosen once for the workspace).
//!
//! # Supported
//! - Kinds: Secrets, ConfigMaps, Namespaces (`default`, `kube-system`, `kube-public`
//!   and `kube-node-lease` exist from the start), core/v1 and events.k8s.io/v1
//!   Events (one storage: each API shows the other's events under its own field names),
//!   coordination.k8s.io/v1 Leases, networking.k8s.io/v1 Ingresses,
//!   CustomResourceDefinitions, and every kind a CRD describes: POST a CRD, or call
//!   [`ApiServer::register_crd`] / [`ApiServer::register`]. All served versions of a
//!   CRD share storage (conversion `None`); `subresources.status` and
//!   `selectableFields` are honoured. Other kinds via [`ApiServer::register_kind`].
//! - Verbs: get, list (label selectors `=`, `==`, `!=`, `in`, `notin`, exists,
//!   `!exists`; field selectors `=`, `==`, `!=` on `metadata.name`,
//!   `metadata.namespace` and the kind's selectable fields; `limit`/`continue`
//!   pagination over a snapshot), watch, create (`generateName`, uid,
//!   creationTimestamp), update, patch, delete (preconditions), deletecollection,
//!   `dryRun=All`; namespaced, cluster-scoped and all-namespaces paths; discovery
//!   (`/api`, `/apis`, `/apis/{group}`, group versions, the aggregated
//!   `apidiscovery.k8s.io` v2 form, `/version`) with each resource's singular
//!   name, short names, categories, verbs and `storageVersionHash` as the apiserver
//!   publishes them; `/healthz`, `/livez`, `/readyz`.
//! - Routing as the apiserver routes (see `router`): built-in kinds on exact routes
//!   (`Status` 404 elsewhere, 405 for a method a route lacks); custom kinds through the
//!   custom-resource handler's reading of the path, so a scope that does not match the
//!   kind's, or an unknown resource or group, is the plain-text `404 page not found`, and
//!   a cluster-scoped custom kind whose plural is `namespaces` cannot be read by name.
//! - Namespaces (see `namespaces`): creating a namespaced object needs its namespace
//!   (404 `namespaces "x" not found`, 403 while it terminates); `default`,
//!   `kube-system` and `kube-public` cannot be deleted; deleting a Namespace turns it
//!   Terminating, and its content is deleted afterwards, in a task of its own, before the
//!   Namespace goes.
//! - Validation (see `validation`), as 422 Invalid with the apiserver's `field: message`
//!   causes: object names per kind (DNS subdomain; DNS label for Namespaces; path segment
//!   for core/v1 Events), labels, annotation keys and size, finalizer names; Events of
//!   both APIs (events.k8s.io/v1 creates strictly: eventTime, type, reporting fields and
//!   their lengths, the namespace rule for cluster-scoped objects); Ingresses (hosts,
//!   path types and paths, backends, TLS, class); Secrets (key format, 1 MiB, the keys
//!   of typed Secrets, immutable type, `stringData` stored as `data`, `type` defaulted to
//!   Opaque) and ConfigMaps (key format, 1 MiB, `immutable`).
//! - CEL rules of CRD schemas (`x-kubernetes-validations`; the `cel` feature, on by default;
//!   see `validation::rules`): evaluated with kube-cel on every create, update, patch, apply
//!   and status write, after the schema's defaults, transition rules with the correlated old
//!   value, unchanged values ratcheted; failures are 422 Invalid with the apiserver's causes
//!   (reason, field path, `Invalid value: ...: message`). A CRD whose rule does not parse is
//!   refused.
//! - Server-side printing (see `table`): `as=Table` (v1 and v1beta1) for get, list and
//!   watch, with `includeObject`; custom kinds print their CRD's `additionalPrinterColumns`
//!   (the JSONPath subset CRDs use: fields, indexes, `[*]`, quoted keys, `==`/`!=` filters),
//!   Namespaces, Secrets, ConfigMaps, Leases, Events, Ingresses and
//!   CustomResourceDefinitions the apiserver's columns, other built-ins Name and Created At.
//!   `kubectl get` works against [`ApiServer::serve`]. An `Accept` naming nothing memapi can
//!   send is 406 NotAcceptable.
//! - resourceVersion: one global counter; updates carrying a stale one get
//!   409 Conflict; PUT without one is accepted for built-in kinds and refused with
//!   422 for custom resources, as the apiserver does. Writes that change nothing
//!   are not stored: no new resourceVersion, no watch event.
//! - generation (custom resources and CRDs): starts at 1 and is bumped only when
//!   something other than metadata (and status, with a status subresource)
//!   changes, and once when deletion starts (as the apiserver's `markAsDeleting`).
//! - Status subresource: writes to the main resource keep the stored `.status`
//!   (it is dropped on create); writes to `/status` change only `.status`.
//! - Patches: JSON merge patch (RFC 7386); JSON patch (RFC 6902, with the
//!   apiserver's rule that `test` of a missing path against `null` passes, which
//!   kube's finalizer helper relies on); strategic merge patch is applied as a
//!   JSON merge patch (lists replaced, `$patch` directives not interpreted), which
//!   is what the apiserver does for custom resources anyway.
//! - Server-side apply (`application/apply-patch+yaml` with a JSON body, which is
//!   what kube sends; `fieldManager` required, `force`): creates missing objects,
//!   merges the applied fields, removes fields the manager applied before and no
//!   longer applies (unless another manager owns them), records `managedFields`
//!   (FieldsV1) per manager and subresource, and reports conflicts (409 with
//!   `FieldManagerConflict` causes) when another manager owns a field the apply
//!   would change; `force` takes ownership. Non-apply writes record `Update`
//!   entries and take the fields they change without conflicts.
//!   Simplifications: lists are atomic (no `listType=map`/`set` merging, so
//!   `conditions` lists are owned whole), applied `null` values are ignored, YAML
//!   bodies are refused (415).
//! - Finalizers: DELETE of an object with finalizers sets `deletionTimestamp` and
//!   `deletionGracePeriodSeconds: 0` and answers 200 with the object; the update or
//!   patch that removes the last finalizer deletes it (watchers see DELETED); new
//!   finalizers cannot be added to an object being deleted (422). Without
//!   finalizers DELETE removes at once and answers a `Status` of Success.
//! - Watch: newline-delimited JSON events streamed in the response body; initial
//!   ADDED events when `resourceVersion` is unset or `"0"`; resuming from a
//!   resourceVersion replays the kept history; `sendInitialEvents` with the
//!   `k8s.io/initial-events-end` bookmark; label/field selectors with
//!   ADDED/DELETED when an object enters/leaves the selection; periodic BOOKMARK
//!   events (and one before a timeout closes the stream) with
//!   `allowWatchBookmarks`; `timeoutSeconds`; a too-old resourceVersion gets an
//!   in-stream ERROR event with a 410 Expired `Status`, as the apiserver sends it,
//!   which makes kube's watcher relist.
//! - Garbage collection: when an object is removed, every object whose
//!   `ownerReferences` name only owners that are gone is deleted too (honouring its
//!   own finalizers, following chains), as the garbage collector does with
//!   background propagation — but at once rather than asynchronously.
//! - Errors are `Status` objects: NotFound 404, Forbidden 403,
//!   AlreadyExists/Conflict 409, Invalid 422, BadRequest 400, MethodNotAllowed 405,
//!   Expired 410; except the plain-text `404 page not found` where the apiserver sends one.
//! - Test hooks: [`ApiServer::inject`] / [`ApiServer::fail_next`] make matching
//!   requests fail; [`ApiServer::request_count`], [`ApiServer::request_count_for`]
//!   and [`ApiServer::requests`] count and list requests (e.g. to assert no hot
//!   loop); [`ApiServer::compact`] forces 410 on resuming watches;
//!   [`ApiServer::close_watches`] ends all open watch streams.
//!
//! # Fidelity
//! The reference tests (`tests/it`) run each check against memapi and, when
//! `MEMAPI_REFERENCE_KUBECONFIG` names one, against Kubernetes 1.37 as
//! `scripts/testcluster.sh` builds and starts it (API server, controller manager, scheduler,
//! KWOK nodes). Where memapi still differs from 1.37 on purpose:
//! - New namespaces get no `kube-root-ca.crt` ConfigMap. The controller manager's root-CA
//!   publisher puts it there, not the API server, and only when it is given a CA; memapi has
//!   no CA (it serves plain HTTP), and a made-up bundle would verify nothing. Tests that count
//!   a namespace's ConfigMaps select their own by label.
//! - CEL: kube-cel parses rules but does not type-check them or estimate their cost, so a CRD
//!   the apiserver refuses for a rule's type or cost is accepted, and such a rule fails when
//!   evaluated (422, with the Rust CEL's error text); a refused rule's compilation error is
//!   worded by that parser too. A rule kube-cel cannot evaluate (a function or macro it lacks)
//!   fails the write with 500 rather than letting it through unchecked. Causes from sibling
//!   fields come in a fixed order (the apiserver's varies).
//! - managedFields own leaves only: no `"."` entry for a map or list a manager created.
//! - 406 names JSON, YAML and protobuf, as the apiserver does, though memapi sends JSON only.
//!
//! # Deliberately not supported
//! Authentication and RBAC, admission webhooks, OpenAPI schema validation and
//! defaulting of CRD schemas, CRD conversion webhooks,
//! `propagationPolicy` (foreground and orphan deletion), graceful deletion
//! periods, the `/finalize` subresource of Namespaces, validation of kinds other than
//! those listed (and of ownerReferences, and the immutability rules of Event updates),
//! unknown fields (the apiserver prunes fields a schema does not declare, warns about each
//! with `fieldValidation=Warn`, the default, and refuses them with `Strict` and in
//! server-side apply; memapi keeps them and says nothing: it has no schemas of the built-in
//! kinds), protobuf, `resourceVersionMatch=Exact` and lists at
//! an older resourceVersion (lists always serve the latest state), other
//! subresources (`scale`, `log`, `exec`, ...), and `/openapi/v2` and `/v3` (so
//! `kubectl apply` needs `--validate=false`).

mod accept;
mod convert;
mod discovery;
mod error;
mod handlers;
mod hooks;
mod jsonpath;
mod kinds;
mod managed;
mod meta;
mod namespaces;
mod patch;
mod path;
mod render;
mod router;
mod selector;
mod server;
mod store;
mod table;
mod validation;
mod watch;

pub use error::{ApiError, Cause};
pub use hooks::{Fault, RequestRecord, Verb};
pub use kinds::{NameRule, Origin, PrinterColumn, ResourceKind};
pub use server::{ApiServer, ApiServerBuilder, ResponseBody};
