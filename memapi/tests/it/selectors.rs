use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use crate::common::*;

async fn seeded() -> Api<Secret> {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    type Seed<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let items: [Seed; 4] = [
        ("web", &[("app", "web"), ("tier", "front")], "Opaque"),
        ("api", &[("app", "api"), ("tier", "back")], "Opaque"),
        ("db", &[("app", "db")], "kubernetes.io/tls"),
        ("bare", &[], "Opaque"),
    ];
    for (name, labels, type_) in items {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            string_data: (type_ == "kubernetes.io/tls")
                .then(|| [("tls.crt", "cert"), ("tls.key", "key")].map(|(k, v)| (k.into(), v.into())).into()),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    secrets
}

async fn names(api: &Api<Secret>, lp: ListParams) -> Vec<String> {
    let mut names: Vec<String> = api.list(&lp).await.unwrap().iter().map(|s| s.name_any()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn label_selectors_of_every_operator() {
    let api = seeded().await;
    let by = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&api, by("app=web")).await, ["web"]);
    assert_eq!(names(&api, by("app==api")).await, ["api"]);
    // `!=` and `notin` also match objects without the label.
    assert_eq!(names(&api, by("app!=web")).await, ["api", "bare", "db"]);
    assert_eq!(names(&api, by("app in (web,db)")).await, ["db", "web"]);
    assert_eq!(names(&api, by("app notin (web,db)")).await, ["api", "bare"]);
    assert_eq!(names(&api, by("tier")).await, ["api", "web"]);
    assert_eq!(names(&api, by("!tier")).await, ["bare", "db"]);
    assert_eq!(names(&api, by("app,tier notin (front)")).await, ["api", "db"]);
}

#[tokio::test]
async fn field_selectors_on_metadata_and_selectable_fields() {
    let api = seeded().await;
    let by = |s: &str| ListParams::default().fields(s);
    assert_eq!(names(&api, by("metadata.name=db")).await, ["db"]);
    assert_eq!(names(&api, by("metadata.name!=db,metadata.namespace=default")).await.len(), 3);
    assert_eq!(names(&api, by("type=kubernetes.io/tls")).await, ["db"]);
    let combined = ListParams::default().labels("app").fields("type==Opaque");
    assert_eq!(names(&api, combined).await, ["api", "web"]);

    let err = api_error(api.list(&by("spec.nothing=1")).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    let err = api_error(api.list(&ListParams::default().labels("app in web")).await.unwrap_err());
    assert_eq!(err.code, 400);
}
