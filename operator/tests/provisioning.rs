//! Namespace provisioning for real: the controllers and engine with the real in-cell
//! services — tenant databases on the real PostgreSQL (`DATABASE_URL`, else 127.0.0.1:5432),
//! X.509 certificates in Secrets, routes, and mutual TLS against the sim front doors — on the
//! real API server named by `E2E_KUBECONFIG` (what `make test` starts), else the in-memory one.
//! Every test works in namespaces of its own and names its tenants with its run id, so runs
//! never share objects, roles or databases; what a test created is removed even if it fails.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cellplane::api::cell::DatabaseSpec;
use cellplane::api::common::SecretReference;
use cellplane::api::conditions::{self, ConditionStatus, types};
use cellplane::api::namespace::{TenantId, Tier};
use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cell::cluster::{ClusterCellServices, ServicesConfig};
use cellplane::cell::ledger::{Effect, Ledger, Recorded};
use cellplane::cell::pki::{self, Lifetimes};
use cellplane::cell::tls::{self, ProbeTls, SimDataPlane};
use cellplane::cell::{CellContext, CellError, CellServices, Tenant, names};
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, is_ready};
use cellplane::testing::{OperatorSetup, TestCluster, TestOperator};
use cellplane_memapi::ApiServer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

const WITHIN: Duration = Duration::from_secs(90);

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&database_url()).expect("DATABASE_URL")
}

async fn admin() -> PgConnection {
    PgConnection::connect_with(&admin_options()).await.expect("connect to PostgreSQL as the administrator")
}

struct Harness {
    cluster: Arc<TestCluster>,
    client: Client,
    services: Arc<ClusterCellServices>,
    /// What the operator asked the in-cell services to do, across its restarts.
    ledger: Arc<Ledger>,
    operator: TestOperator,
    lifetimes: Lifetimes,
}

/// The real in-cell services in the test's operator namespace, with a new sim data plane.
fn services(cluster: &TestCluster, lifetimes: Lifetimes) -> Arc<ClusterCellServices> {
    let config = ServicesConfig { namespace: cluster.namespace.clone(), lifetimes };
    Arc::new(ClusterCellServices::new(cluster.client.clone(), config, SimDataPlane::new()))
}

fn setup(services: &Arc<ClusterCellServices>, ledger: &Arc<Ledger>) -> OperatorSetup {
    let cloud = Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(1), ..SimConfig::default() }));
    OperatorSetup::new(cloud, Arc::new(Recorded::new(services.clone(), ledger.clone())))
}

/// Runs `body` with an operator on the test cluster, then removes what the test created.
async fn provision<F, Fut>(lifetimes: Lifetimes, body: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cluster = TestCluster::start().await.expect("a test cluster");
    cluster
        .scenario(|cluster| async move {
            let services = services(&cluster, lifetimes);
            let ledger = Arc::new(Ledger::default());
            let operator = TestOperator::start(&cluster, setup(&services, &ledger)).await;
            let client = cluster.client.clone();
            body(Harness { cluster, client, services, ledger, operator, lifetimes }).await
        })
        .await
}

impl Harness {
    /// Kills the operator as a crash would and starts a new one (new process state: a new sim
    /// data plane) on the same journal.
    async fn crash_and_restart(&mut self) {
        self.services = services(&self.cluster, self.lifetimes);
        self.operator.crash_and_restart(&self.cluster, setup(&self.services, &self.ledger)).await;
    }

    fn name(&self, base: &str) -> String {
        self.cluster.name(base)
    }

    fn account(&self) -> &str {
        &self.cluster.account
    }

    fn namespaces(&self) -> Api<Namespace> {
        self.cluster.namespaces()
    }

    fn tenant(&self, name: &str, region: &str, tier: Tier) -> Namespace {
        fixtures::namespace(name, self.account(), region, tier)
    }

    async fn create<K>(&self, api: &Api<K>, obj: &K)
    where
        K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.cluster.create(api, obj.clone()).await.unwrap_or_else(|e| panic!("creating {obj:?}: {e}"));
    }

    /// Secrets of the operator's namespace (cell CAs, endpoint server certificates).
    fn own_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.cluster.namespace)
    }

    /// Secrets of the tenants' account.
    fn account_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.account())
    }

    fn id(&self, name: &str) -> TenantId {
        TenantId::new(name, self.account())
    }

    /// A sim cell whose tenant databases live on the test PostgreSQL.
    async fn database_cell(&self, name: &str, max: i32) -> Cell {
        let options = admin_options();
        self.database_cell_as(name, max, options.get_username()).await
    }

    /// The same, administered by `username`.
    async fn database_cell_as(&self, name: &str, max: i32, username: &str) -> Cell {
        let options = admin_options();
        let admin = Secret {
            metadata: kube::api::ObjectMeta { name: Some("pg-admin".into()), ..Default::default() },
            string_data: None,
            data: Some([("username".to_string(), k8s_openapi::ByteString(username.as_bytes().to_vec()))].into()),
            ..Secret::default()
        };
        fixtures::create(&self.own_secrets(), &admin).await.unwrap();
        let mut cell = fixtures::cell(name, "eu-west-1", &[], max, "1.0.0");
        cell.spec.database = Some(DatabaseSpec {
            host: options.get_host().to_string(),
            port: i32::from(options.get_port()),
            database: options.get_database().unwrap_or("postgres").to_string(),
            admin_secret_ref: SecretReference { name: "pg-admin".into(), namespace: None },
        });
        cell
    }

    /// What the in-cell services are given for `namespace` placed in `cell`.
    async fn cell_and_tenant(&self, cell: &str, namespace: &Namespace, endpoint: &str) -> (CellContext, Tenant) {
        let context = CellContext::of(&self.cluster.cells().get(cell).await.unwrap());
        let tenant = Tenant {
            id: TenantId::of(namespace).unwrap(),
            uid: namespace.metadata.uid.clone().unwrap(),
            mtls: namespace.spec.mtls.clone(),
            endpoint: endpoint.to_string(),
        };
        (context, tenant)
    }

    async fn ready(&self, name: &str) -> Namespace {
        let ready = |n: Option<&Namespace>| {
            n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        };
        match fixtures::wait_for(&self.namespaces(), name, "Ready", WITHIN, ready).await {
            Ok(Some(ns)) => ns,
            other => {
                let now = self.namespaces().get(name).await.ok().and_then(|n| n.status);
                panic!("{name} not Ready ({other:?}): {now:#?}");
            }
        }
    }

    async fn stalled(&self, name: &str, reason: &'static str) -> Namespace {
        let stalled = move |n: Option<&Namespace>| {
            let conditions = n.and_then(|n| n.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
            conditions::find(&conditions, types::STALLED)
                .is_some_and(|c| c.status == ConditionStatus::True && c.reason == reason)
        };
        match fixtures::wait_for(&self.namespaces(), name, reason, WITHIN, stalled).await {
            Ok(Some(ns)) => ns,
            other => {
                let now = self.namespaces().get(name).await.ok().and_then(|n| n.status);
                panic!("{name} not Stalled with {reason} ({other:?}): {now:#?}");
            }
        }
    }

    /// Deletes a Namespace and waits until it is gone. Its dependents are orphaned rather than
    /// garbage-collected, so what is gone afterwards was removed by the operator's teardown.
    async fn delete_and_wait(&self, name: &str) {
        let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..Default::default() };
        self.namespaces().delete(name, &orphan).await.unwrap();
        fixtures::wait_for(&self.namespaces(), name, "deleted", WITHIN, |n: Option<&Namespace>| n.is_none())
            .await
            .unwrap_or_else(|e| panic!("{name} was not deleted: {e}"));
    }

    /// Secrets of a tenant, in its account and in the operator's namespace (labelled for it or
    /// named after it).
    async fn tenant_secrets(&self, tenant: &str) -> Vec<String> {
        let id = self.id(tenant);
        let mut all = self.account_secrets().list(&ListParams::default()).await.unwrap().items;
        all.extend(self.own_secrets().list(&ListParams::default()).await.unwrap().items);
        let mut names: Vec<String> = all
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.clone().unwrap_or_default();
                let labelled = labels.get("cellplane.io/namespace") == Some(&id.name)
                    && labels.get("cellplane.io/account") == Some(&id.account);
                let named = s
                    .metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| n.starts_with(&format!("{tenant}-")) || n.starts_with(&names::route(&id)));
                labelled || named
            })
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort();
        names
    }

    async fn secret_text(&self, api: &Api<Secret>, name: &str, key: &str) -> String {
        let secret = api.get(name).await.unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    }

    /// Deletes what the test created while the operator still runs (so teardown happens),
    /// then stops it.
    async fn stop(self) {
        self.cluster.cleanup().await.expect("cleanup");
        self.operator.stop().await;
    }
}

fn condition(ns: &Namespace, type_: &str) -> cellplane::api::Condition {
    let conditions = ns.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    conditions::find(&conditions, type_).cloned().unwrap_or_else(|| panic!("no {type_} condition"))
}

fn tenant_options(role: &str, password: &str, database: &str) -> PgConnectOptions {
    let admin = admin_options();
    PgConnectOptions::new()
        .host(admin.get_host())
        .port(admin.get_port())
        .username(role)
        .password(password)
        .database(database)
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string())).execute(conn).await.map(|_| ())
}

fn denied(result: Result<(), sqlx::Error>, what: &str) {
    match result {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
        other => panic!("{what}: expected permission denied (42501), got {other:?}"),
    }
}

async fn role_and_database_exist(ident: &str) -> (bool, bool) {
    let mut conn = admin().await;
    let role: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(ident)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    let db: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(ident)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    (role.is_some(), db.is_some())
}

/// Reasons of the Events about `name` in `namespace`, once all of `wanted` arrived (watched,
/// with a deadline).
async fn events_for(client: &Client, namespace: &str, name: &str, wanted: &[&str]) -> Vec<String> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let mut seen = Vec::new();
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let _ = tokio::time::timeout(WITHIN, async {
        while let Some(Ok(event)) = stream.next().await {
            if event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && let Some(reason) = event.reason
            {
                seen.push(reason);
            }
            if wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
                return;
            }
        }
    })
    .await;
    seen
}

/// The tenant's client certificate chain, key and CA bundle, from one version of its Secret (a
/// renewal may replace it between two reads).
async fn client_tls(h: &Harness, tenant: &str) -> (String, String, String) {
    let name = format!("{tenant}-client-tls");
    let data = h.account_secrets().get(&name).await.unwrap_or_else(|e| panic!("Secret {name}: {e}")).data.unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    (text("tls.crt"), text("tls.key"), text("ca.crt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_gets_its_own_database_certificates_route_and_a_verified_mtls_endpoint_and_teardown_removes_them() {
    provision(Lifetimes::default(), |h| async move {
        let cell_name = h.name("db");
        h.create(&h.cluster.cells(), &h.database_cell(&cell_name, 10).await).await;
        let alpha = h.name("alpha");
        // A name of the full 63 characters: its role name is shortened, still unique.
        let long = format!("{}-{}", "l".repeat(63 - 9), h.cluster.run);
        for name in [&alpha, &long] {
            h.create(&h.namespaces(), &h.tenant(name, "eu-west-1", Tier::Standard)).await;
        }
        let a = h.ready(&alpha).await;
        let l = h.ready(&long).await;

        // Status records the grant, and every step says what it did.
        let status = a.status.clone().unwrap();
        let db = status.database.clone().expect("status.database");
        let readable = format!("cp_{}_{}_", alpha, h.account()).replace('-', "_");
        assert!(db.role.starts_with(&readable), "{} does not start with {readable}", db.role);
        assert_eq!(db.database, db.role);
        assert!(!db.simulated);
        assert!(db.grants.contains("NOCREATEROLE"), "{}", db.grants);
        let long_role = l.status.clone().unwrap().database.unwrap().role;
        assert_eq!(long_role.len(), 63, "{long_role}");
        let endpoint = status.endpoint.clone().unwrap();
        assert_eq!(endpoint, format!("{alpha}.{}.{cell_name}.example.com", h.account()));
        for (type_, reason) in [
            ("CellSelected", "CellAssigned"),
            ("DatabaseReady", "DatabaseCreated"),
            ("CertificatesReady", "CertificatesIssued"),
            ("IngressReady", "RouteCreated"),
            ("Connected", "HandshakeVerified"),
            ("Ready", "Reconciled"),
        ] {
            let c = condition(&a, type_);
            assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::True, reason), "{type_}: {c:?}");
        }
        assert!(condition(&a, "Connected").message.contains("mutual TLS"), "{:?}", condition(&a, "Connected"));
        assert!(status.certificates.as_ref().and_then(|c| c.renew_at.as_ref()).is_some());

        // For kubectl describe, in the account's namespace: the steps in the conditions, and one
        // Event for the milestone (an Event per step would cost a write per step per tenant).
        let seen = events_for(&h.client, h.account(), &alpha, &["Ready"]).await;
        assert_eq!(seen, ["Ready"], "one Event when Ready");

        // The tenant's Secrets are in its account, owned by its Namespace; the endpoint's
        // server certificate stays beside the route in the operator's namespace.
        let id = h.id(&alpha);
        let route_name = names::route(&id);
        let mut expected =
            vec![format!("{alpha}-client-ca"), format!("{alpha}-client-tls"), format!("{alpha}-db"), names::server(&id)];
        expected.sort();
        assert_eq!(h.tenant_secrets(&alpha).await, expected);
        let db_secret = h.account_secrets().get(&format!("{alpha}-db")).await.unwrap();
        assert_eq!(db_secret.metadata.owner_references.unwrap()[0].uid, a.metadata.uid.clone().unwrap());
        assert!(h.own_secrets().get_opt(&names::server(&id)).await.unwrap().is_some());
        let ingresses: Api<Ingress> = Api::namespaced(h.client.clone(), &h.cluster.namespace);
        let ingress = ingresses.get(&route_name).await.unwrap();
        let labels = ingress.metadata.labels.clone().unwrap();
        assert_eq!((labels["cellplane.io/namespace"].as_str(), labels["cellplane.io/account"].as_str()), (alpha.as_str(), h.account()));
        assert!(ingress.metadata.owner_references.is_none(), "a route is never left to garbage collection");
        assert_eq!(ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(), Some(endpoint.as_str()));

        // The tenant can log in and use its database...
        let db_secret = format!("{alpha}-db");
        let (role, password, database) = (
            h.secret_text(&h.account_secrets(), &db_secret, "username").await,
            h.secret_text(&h.account_secrets(), &db_secret, "password").await,
            h.secret_text(&h.account_secrets(), &db_secret, "database").await,
        );
        assert_eq!(password.len(), 32);
        let mut conn = PgConnection::connect_with(&tenant_options(&role, &password, &database)).await.unwrap();
        exec(&mut conn, "CREATE TABLE notes (id int); INSERT INTO notes VALUES (1)").await.unwrap();
        // ...and nothing else.
        denied(exec(&mut conn, "CREATE ROLE sneaky").await, "CREATE ROLE");
        denied(exec(&mut conn, "CREATE DATABASE sneaky").await, "CREATE DATABASE");
        denied(exec(&mut conn, &format!("ALTER ROLE {role} CREATEROLE")).await, "granting itself CREATEROLE");
        conn.close().await.unwrap();
        let other = PgConnection::connect_with(&tenant_options(&role, &password, &long_role)).await;
        match other {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {}
            other => panic!("connecting to another tenant's database: {:?}", other.map(|_| ())),
        }
        let admin_db = admin_options().get_database().unwrap_or("postgres").to_string();
        let mut conn = PgConnection::connect_with(&tenant_options(&role, &password, &admin_db)).await.unwrap();
        denied(exec(&mut conn, "CREATE TABLE public.sneaky (id int)").await, "creating in the public schema");
        conn.close().await.unwrap();
        let mut conn = admin().await;
        let flags: (bool, bool, bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
        )
        .bind(&role)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(flags, (false, false, false, false, false));
        conn.close().await.unwrap();

        // Real mutual TLS against the front door: the tenant's certificate works on its endpoint...
        let (chain, key, cell_ca) = client_tls(&h, &alpha).await;
        let resolver = h.services.data_plane().clone();
        let resolver = resolver.as_ref();
        let tls_of = |chain: &'static str, key: &'static str, roots: &'static str| ProbeTls {
            server_roots_pem: roots,
            client_chain_pem: chain,
            client_key_pem: key,
        };
        let (chain, key, cell_ca): (&'static str, &'static str, &'static str) =
            (chain.leak(), key.leak(), cell_ca.leak());
        let verified = tls::probe(resolver, &endpoint, &tls_of(chain, key, cell_ca)).await.unwrap();
        assert!(verified.contains("client certificate accepted"), "{verified}");
        // ...but not on another tenant's endpoint,
        let long_endpoint = l.status.clone().unwrap().endpoint.unwrap();
        assert!(tls::probe(resolver, &long_endpoint, &tls_of(chain, key, cell_ca)).await.is_err());
        // a certificate from another CA is refused,
        let now = std::time::SystemTime::now();
        let stranger_ca = pki::new_ca("stranger", now, Duration::from_secs(3600)).unwrap();
        let stranger =
            pki::issue_client(&stranger_ca.cert_pem, &stranger_ca.key_pem, "stranger", now, Duration::from_secs(3600))
                .unwrap();
        let refused =
            tls::probe(resolver, &endpoint, &tls_of(stranger.cert_pem.leak(), stranger.key_pem.leak(), cell_ca))
                .await
                .unwrap_err();
        assert!(refused.to_string().contains("refused"), "{refused}");
        // and a client that trusts another CA does not accept the server.
        let wrong_roots =
            tls::probe(resolver, &endpoint, &tls_of(chain, key, stranger_ca.cert_pem.leak())).await.unwrap_err();
        assert!(wrong_roots.to_string().contains("TLS handshake"), "{wrong_roots}");

        // A restarted operator (a new, empty sim data plane) serves the existing routes again
        // when it checks them.
        let (context, tenant) = h.cell_and_tenant(&cell_name, &a, &endpoint).await;
        let restarted = services(&h.cluster, Lifetimes::default());
        let verified = restarted.probe(&context, &tenant).await.unwrap();
        assert!(verified.contains("mutual TLS"), "{verified}");
        assert_eq!(restarted.data_plane().hosts(&cell_name), std::slice::from_ref(&endpoint));

        // Teardown leaves nothing behind (dependents are orphaned, not collected: the operator
        // removed them).
        for (name, role) in [(&alpha, &role), (&long, &long_role)] {
            h.delete_and_wait(name).await;
            assert_eq!(role_and_database_exist(role).await, (false, false), "{role} left behind");
            assert!(h.tenant_secrets(name).await.is_empty(), "{:?}", h.tenant_secrets(name).await);
            assert!(ingresses.get_opt(&names::route(&h.id(name))).await.unwrap().is_none());
        }
        assert!(h.services.data_plane().hosts(&cell_name).is_empty());
        assert!(tls::probe(resolver, &endpoint, &tls_of(chain, key, cell_ca)).await.is_err());

        // The cell's CA was created at provisioning and goes with the cell.
        let ca_secret = names::cell_ca(&cell_name);
        assert!(h.own_secrets().get_opt(&ca_secret).await.unwrap().is_some());
        h.cluster.cells().delete(&cell_name, &Default::default()).await.unwrap();
        fixtures::wait_for(&h.cluster.cells(), &cell_name, "deleted", WITHIN, |c: Option<&Cell>| c.is_none())
            .await
            .unwrap();
        assert!(h.own_secrets().get_opt(&ca_secret).await.unwrap().is_none());
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_by_the_api_or_the_controller_and_never_reach_sql() {
    provision(Lifetimes::default(), |h| async move {
        let cell_name = h.name("hostile");
        let cell = h.database_cell(&cell_name, 10).await;
        h.create(&h.cluster.cells(), &cell).await;

        // What is not even a Kubernetes name is refused by the API server.
        for hostile in ["a\"; DROP ROLE postgres; --", "x'); DROP DATABASE postgres; --", "ünïcödé", "Robert'); --"]
        {
            let ns = h.cluster.own(h.tenant(hostile, "eu-west-1", Tier::Standard));
            match h.namespaces().create(&PostParams::default(), &ns).await {
                Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{hostile:?}: {status:?}"),
                other => panic!("{hostile:?} was accepted: {other:?}"),
            }
        }
        // Names that are Kubernetes names but not DNS labels: the CRD's CEL rule refuses them.
        let dotted = format!("a.b.{}", h.cluster.run);
        let too_long = format!("{}{}", "x".repeat(64), h.cluster.run);
        for name in [&dotted, &too_long] {
            let ns = h.cluster.own(h.tenant(name, "eu-west-1", Tier::Standard));
            match h.namespaces().create(&PostParams::default(), &ns).await {
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{name:?}: {status:?}");
                    assert!(status.message.contains("must be a DNS label"), "{name:?}: {}", status.message);
                }
                other => panic!("{name:?} was accepted by the API server: {other:?}"),
            }
        }

        // The database layer refuses such names itself, before any SQL is sent.
        let context = CellContext { name: cell_name.clone(), ..CellContext::of(&cell) };
        for hostile in ["a\"; DROP ROLE postgres; --", "ünïcödé", &"y".repeat(64), "a.b", ""] {
            for id in [TenantId::new(hostile, h.account()), TenantId::new("web", hostile)] {
                let tenant =
                    Tenant { id, uid: "uid".into(), mtls: Default::default(), endpoint: "x.example.com".into() };
                let result = h.services.create_database("key", &context, &tenant).await;
                assert!(matches!(result, Err(CellError::Invalid(_))), "{hostile:?}: {result:?}");
            }
        }
        let mut conn = admin().await;
        let postgres: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        assert!(postgres.is_some(), "the postgres role is still there");
        let leaked: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE rolname ~ '[^a-z0-9_]' OR rolname LIKE '%drop%' \
             UNION ALL SELECT datname::text FROM pg_database WHERE datname ~ '[^a-z0-9_]' OR datname LIKE '%drop%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let leaked: Vec<&String> = leaked.iter().filter(|n| !n.starts_with("pg_")).collect();
        assert!(leaked.is_empty(), "roles or databases from hostile names: {leaked:?}");
        conn.close().await.unwrap();
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_client_ca_is_validated_and_its_certificates_are_accepted() {
    provision(Lifetimes::default(), |h| async move {
        let cell_name = h.name("ca");
        // No database named: the tenant gets a simulated one, and status says so.
        h.create(&h.cluster.cells(), &fixtures::cell(&cell_name, "eu-west-1", &[], 10, "1.0.0")).await;
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        let tenant_ca = pki::new_ca("tenant CA", now, hour).unwrap();
        let not_a_ca = pki::issue_client(&tenant_ca.cert_pem, &tenant_ca.key_pem, "leaf", now, hour).unwrap();
        let expired = pki::new_ca("old CA", now - 2 * hour, hour).unwrap();
        let with_ca = |name: &str, pem: &str| {
            let mut ns = h.tenant(name, "eu-west-1", Tier::Standard);
            ns.spec.mtls.issue_client_certificate = None;
            ns.spec.mtls.accepted_client_ca = Some(pem.to_string());
            ns
        };
        for (base, pem, expect) in
            [("leaf", &not_a_ca.cert_pem, "is not a CA"), ("expired", &expired.cert_pem, "expired at")]
        {
            let name = h.name(base);
            h.create(&h.namespaces(), &with_ca(&name, pem)).await;
            let ns = h.stalled(&name, "InvalidClientCA").await;
            let stalled = condition(&ns, "Stalled");
            assert!(stalled.message.contains(expect), "{stalled:?}");
            assert!(stalled.message.contains("spec.mtls.acceptedClientCA"), "{stalled:?}");
            assert_eq!(condition(&ns, "Ready").status, ConditionStatus::False);
            h.delete_and_wait(&name).await;
        }

        let good = h.name("good");
        h.create(&h.namespaces(), &with_ca(&good, &tenant_ca.cert_pem)).await;
        let ns = h.ready(&good).await;
        let status = ns.status.clone().unwrap();
        assert!(status.database.as_ref().unwrap().simulated);
        assert_eq!(condition(&ns, "DatabaseReady").reason, "SimulatedDatabase");
        assert!(status.secrets.as_ref().unwrap().client_certificate.is_none(), "no client certificate is issued");
        // A client certificate of the tenant's own CA is accepted by its endpoint.
        let alice = pki::issue_client(&tenant_ca.cert_pem, &tenant_ca.key_pem, "alice", now, hour).unwrap();
        let cell_ca = h.secret_text(&h.own_secrets(), &names::cell_ca(&cell_name), "ca.crt").await;
        let tls =
            ProbeTls { server_roots_pem: &cell_ca, client_chain_pem: &alice.cert_pem, client_key_pem: &alice.key_pem };
        let endpoint = status.endpoint.unwrap();
        tls::probe(h.services.data_plane().as_ref(), &endpoint, &tls).await.unwrap();
        h.delete_and_wait(&good).await;
        assert!(h.tenant_secrets(&good).await.is_empty());
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_cell_ca_are_renewed_before_they_expire() {
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(12),
        server: Duration::from_secs(6),
        client: Duration::from_secs(6),
        renew_at_percent: 50,
    };
    provision(lifetimes, |h| async move {
        let cell_name = h.name("renew");
        h.create(&h.cluster.cells(), &fixtures::cell(&cell_name, "eu-west-1", &[], 10, "1.0.0")).await;
        let name = h.name("tenant");
        h.create(&h.namespaces(), &h.tenant(&name, "eu-west-1", Tier::Standard)).await;
        let first = h.ready(&name).await.status.unwrap().certificates.unwrap().not_after.unwrap();
        let renewed = move |n: Option<&Namespace>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.certificates.as_ref())
                .and_then(|c| c.not_after.as_ref())
                .is_some_and(|t| t.0 > first.0)
        };
        let ns = fixtures::wait_for(&h.namespaces(), &name, "certificates renewed", Duration::from_secs(30), renewed)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(condition(&ns, "Ready").status, ConditionStatus::True);
        // The cell CA was rotated by its own timer; the old one stays in the bundle.
        let rotated = |s: Option<&Secret>| {
            s.and_then(|s| s.metadata.annotations.as_ref()).is_some_and(|a| a.contains_key("cellplane.io/issued-for"))
        };
        let ca = names::cell_ca(&cell_name);
        fixtures::wait_for(&h.own_secrets(), &ca, "CA rotated", Duration::from_secs(30), rotated).await.unwrap();
        // The renewed certificates still make a verified mutual-TLS connection.
        let (chain, key, roots) = client_tls(&h, &name).await;
        let bundle = h.secret_text(&h.own_secrets(), &ca, "ca.crt").await;
        let roots = format!("{roots}{bundle}");
        let tls = ProbeTls { server_roots_pem: &roots, client_chain_pem: &chain, client_key_pem: &key };
        let endpoint = ns.status.unwrap().endpoint.unwrap();
        tls::probe(h.services.data_plane().as_ref(), &endpoint, &tls).await.unwrap();
        h.delete_and_wait(&name).await;
        h.stop().await;
    })
    .await;
}

/// A TLSRoute CRD of the Gateway API, as its cluster installs it.
fn tls_route_crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "tlsroutes.gateway.networking.k8s.io" },
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": { "plural": "tlsroutes", "singular": "tlsroute", "kind": "TLSRoute", "listKind": "TLSRouteList" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha2", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
                "subresources": { "status": {} }
            }]
        }
    }))
    .expect("a valid CRD")
}

/// A cell whose routes go to `cell_cluster` (another API server, reached through a kubeconfig
/// in a Secret of the operator's namespace).
async fn remote_cell(h: &Harness, name: &str, cell_cluster: &ApiServer) -> Cell {
    let kubeconfig = cell_cluster.serve_on_loopback().await.unwrap();
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(format!("{name}-kubeconfig")), ..Default::default() },
        data: Some([("kubeconfig".to_string(), k8s_openapi::ByteString(kubeconfig.to_string().into_bytes()))].into()),
        ..Secret::default()
    };
    fixtures::create(&h.own_secrets(), &secret).await.unwrap();
    // The routes go to the namespace of the same name in the cell's cluster.
    fixtures::ensure_namespace(&cell_cluster.client(), &h.cluster.namespace).await.unwrap();
    let mut cell = fixtures::cell(name, "eu-west-1", &[], 10, "1.0.0");
    cell.spec.ingress.kubeconfig_secret_ref =
        Some(SecretReference { name: format!("{name}-kubeconfig"), namespace: None });
    cell
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_are_used_when_the_cell_cluster_serves_the_gateway_api() {
    provision(Lifetimes::default(), |h| async move {
        let cell_cluster = ApiServer::new();
        cell_cluster.register_crd(&tls_route_crd()).unwrap();
        let cell_name = h.name("gw");
        let mut cell = remote_cell(&h, &cell_name, &cell_cluster).await;
        cell.spec.ingress.annotations.insert("example.com/passthrough".into(), "true".into());
        h.create(&h.cluster.cells(), &cell).await;
        let name = h.name("routed");
        h.create(&h.namespaces(), &h.tenant(&name, "eu-west-1", Tier::Standard)).await;
        let ns = h.ready(&name).await;
        let route = ns.status.clone().unwrap().route.unwrap();
        assert_eq!(route.kind, "TLSRoute");
        let resource = kube::api::ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1alpha2".into(),
            api_version: "gateway.networking.k8s.io/v1alpha2".into(),
            kind: "TLSRoute".into(),
            plural: "tlsroutes".into(),
        };
        let route_name = names::route(&h.id(&name));
        let routes: Api<DynamicObject> = Api::namespaced_with(cell_cluster.client(), &h.cluster.namespace, &resource);
        let object = routes.get(&route_name).await.unwrap();
        assert_eq!(object.data["spec"]["hostnames"][0], ns.status.unwrap().endpoint.unwrap());
        assert_eq!(object.metadata.labels.unwrap()["app.kubernetes.io/managed-by"], "cellplane");
        assert_eq!(object.metadata.annotations.unwrap()["example.com/passthrough"], "true");
        let ingresses: Api<Ingress> = Api::namespaced(cell_cluster.client(), &h.cluster.namespace);
        assert!(ingresses.get_opt(&route_name).await.unwrap().is_none(), "no Ingress as well");
        h.delete_and_wait(&name).await;
        assert!(routes.get_opt(&route_name).await.unwrap().is_none());
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_namespace_stalls_naming_why_each_cell_refused() {
    provision(Lifetimes::default(), |h| async move {
        let cell_name = h.name("eu");
        h.create(&h.cluster.cells(), &fixtures::cell(&cell_name, "eu-west-1", &[], 10, "1.0.0")).await;
        // No cell in its region: Stalled, naming why each cell was refused.
        let lost = h.name("lost");
        h.create(&h.namespaces(), &h.tenant(&lost, "us-east-1", Tier::Standard)).await;
        let ns = h.stalled(&lost, "NoEligibleCell").await;
        let message = condition(&ns, "Stalled").message;
        assert!(message.contains(&format!("{cell_name}: in region eu-west-1")), "{message}");
        assert_eq!(condition(&ns, "CellSelected").status, ConditionStatus::False);
        h.delete_and_wait(&lost).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_namespaces_never_land_in_a_ring_that_admits_only_standard_nor_a_cordoned_cell() {
    provision(Lifetimes::default(), |h| async move {
        let cells = h.cluster.cells();
        let (canary, prod) = (h.name("canary"), h.name("prod"));
        let (canary_ring, prod_ring) = (h.name("canary-ring"), h.name("prod-ring"));
        let critical = ("cellplane.io/tier", "critical");
        let canary_labels = [critical, ("cellplane.io/ring", canary_ring.as_str())];
        h.create(&cells, &fixtures::cell(&canary, "eu-west-1", &canary_labels, 10, "1.0.0")).await;
        let prod_labels = [critical, ("cellplane.io/ring", prod_ring.as_str())];
        h.create(&cells, &fixtures::cell(&prod, "eu-west-1", &prod_labels, 10, "1.0.0")).await;
        let ring_0 = h.name("ring-0");
        let rings: Api<DeploymentRing> = h.cluster.rings();
        let mut canary_only = fixtures::ring(&ring_0, 0, &canary_ring, Some("1.0.0"), "0s");
        canary_only.spec.admits.tiers = Some(vec![Tier::Standard]);
        h.create(&rings, &canary_only).await;
        let seen = |r: Option<&DeploymentRing>| r.and_then(|r| r.status.as_ref()).is_some();
        fixtures::wait_for(&rings, &ring_0, "reconciled", WITHIN, seen).await.unwrap();

        // The canary is as empty as prod, but its ring admits standard tenants only.
        let first = h.name("first");
        h.create(&h.namespaces(), &h.tenant(&first, "eu-west-1", Tier::Critical)).await;
        assert_eq!(h.ready(&first).await.status.unwrap().assigned_cell, Some(prod.clone()));

        // With prod cordoned, no cell may take a critical tenant, and the status says why.
        let cordon = serde_json::json!({ "spec": { "cordoned": true } });
        cells.patch(&prod, &Default::default(), &kube::api::Patch::Merge(&cordon)).await.unwrap();
        let second = h.name("second");
        h.create(&h.namespaces(), &h.tenant(&second, "eu-west-1", Tier::Critical)).await;
        let ns = h.stalled(&second, "NoEligibleCell").await;
        let message = condition(&ns, "Stalled").message;
        assert!(message.contains(&format!("{canary}: in ring {ring_0}, which admits tiers standard")), "{message}");
        assert!(message.contains(&format!("{prod}: cordoned")), "{message}");
        // The namespace placed before the cordon stays where it is.
        assert_eq!(h.ready(&first).await.status.unwrap().assigned_cell, Some(prod.clone()));
        // Uncordoned, the waiting namespace is placed.
        let uncordon = serde_json::json!({ "spec": { "cordoned": false } });
        cells.patch(&prod, &Default::default(), &kube::api::Patch::Merge(&uncordon)).await.unwrap();
        assert_eq!(h.ready(&second).await.status.unwrap().assigned_cell, Some(prod.clone()));
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_that_is_not_a_superuser_provisions_and_tears_down() {
    provision(Lifetimes::default(), |h| async move {
        // What a managed PostgreSQL gives: CREATEROLE and CREATEDB, no superuser.
        let admin_role = format!("cp_admin_{}", h.cluster.run);
        let mut conn = admin().await;
        exec(&mut conn, &format!("CREATE ROLE {admin_role} LOGIN CREATEROLE CREATEDB")).await.unwrap();
        let cell_name = h.name("managed");
        h.create(&h.cluster.cells(), &h.database_cell_as(&cell_name, 10, &admin_role).await).await;
        let name = h.name("tenant");
        h.create(&h.namespaces(), &h.tenant(&name, "eu-west-1", Tier::Standard)).await;
        let ns = h.ready(&name).await;
        let role = ns.status.unwrap().database.unwrap().role;
        let password = h.secret_text(&h.account_secrets(), &format!("{name}-db"), "password").await;
        let mut tenant = PgConnection::connect_with(&tenant_options(&role, &password, &role)).await.unwrap();
        exec(&mut tenant, "CREATE TABLE t (id int)").await.unwrap();
        denied(exec(&mut tenant, "CREATE ROLE sneaky").await, "CREATE ROLE");
        tenant.close().await.unwrap();
        let public: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 AND a.grantee = 0)",
        )
        .bind(&role)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(!public, "PUBLIC keeps a privilege on {role}");
        h.delete_and_wait(&name).await;
        assert_eq!(role_and_database_exist(&role).await, (false, false), "{role} left behind");
        exec(&mut conn, &format!("DROP ROLE {admin_role}")).await.unwrap();
        conn.close().await.unwrap();
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_crash_mid_provisioning_converges_without_leaks() {
    provision(Lifetimes::default(), |mut h| async move {
        let cell_name = h.name("crash");
        h.create(&h.cluster.cells(), &h.database_cell(&cell_name, 10).await).await;
        let names: Vec<String> = (0..4).map(|i| h.name(&format!("crash{i}"))).collect();
        for name in &names {
            h.create(&h.namespaces(), &h.tenant(name, "eu-west-1", Tier::Standard)).await;
        }
        // Crash once the first tenant has its database, while the others are mid-way.
        let has_database =
            |n: Option<&Namespace>| n.and_then(|n| n.status.as_ref()).is_some_and(|s| s.database.is_some());
        fixtures::wait_for(&h.namespaces(), &names[0], "database", WITHIN, has_database).await.unwrap();
        h.crash_and_restart().await;
        let mut roles = Vec::new();
        for name in &names {
            let ns = h.ready(name).await;
            let status = ns.status.clone().unwrap();
            roles.push(status.database.unwrap().role);
            // Its credentials work, and its endpoint answers mutual TLS on the new front door.
            let role = &roles[roles.len() - 1];
            let password = h.secret_text(&h.account_secrets(), &format!("{name}-db"), "password").await;
            let conn = PgConnection::connect_with(&tenant_options(role, &password, role)).await;
            assert!(conn.is_ok(), "{name}: {:?}", conn.map(|_| ()));
            let (context, tenant) = h.cell_and_tenant(&cell_name, &ns, &status.endpoint.clone().unwrap()).await;
            h.services.probe(&context, &tenant).await.unwrap();
        }
        for (name, role) in names.iter().zip(&roles) {
            h.delete_and_wait(name).await;
            assert_eq!(role_and_database_exist(role).await, (false, false), "{role} left behind");
            assert!(h.tenant_secrets(name).await.is_empty(), "{:?}", h.tenant_secrets(name).await);
        }
        let made = |effect| h.ledger.executions().iter().filter(|e| e.effect == effect && e.key.is_some()).count();
        assert!(made(Effect::Database) >= names.len() && made(Effect::Certificates) >= names.len());
        assert!(h.ledger.duplicates().is_empty(), "made twice in the cell: {:?}", h.ledger.duplicates());
        h.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_go_to_the_cell_cluster_named_by_its_kubeconfig_secret() {
    provision(Lifetimes::default(), |h| async move {
        // The cell's own cluster: another API server, reached over HTTP through a kubeconfig.
        let cell_cluster = ApiServer::new();
        let cell_name = h.name("remote");
        let mut cell = remote_cell(&h, &cell_name, &cell_cluster).await;
        cell.spec.ingress.class_name = Some("nginx".into());
        h.create(&h.cluster.cells(), &cell).await;
        let name = h.name("far");
        h.create(&h.namespaces(), &h.tenant(&name, "eu-west-1", Tier::Standard)).await;
        h.ready(&name).await;

        let route = names::route(&h.id(&name));
        let remote: Api<Ingress> = Api::namespaced(cell_cluster.client(), &h.cluster.namespace);
        let ingress = remote.get(&route).await.expect("the route is in the cell's cluster");
        assert_eq!(ingress.spec.unwrap().ingress_class_name.as_deref(), Some("nginx"));
        let local: Api<Ingress> = Api::namespaced(h.client.clone(), &h.cluster.namespace);
        assert!(local.get_opt(&route).await.unwrap().is_none(), "not in the operator's cluster");
        h.delete_and_wait(&name).await;
        assert!(remote.get_opt(&route).await.unwrap().is_none());
        h.stop().await;
    })
    .await;
}
