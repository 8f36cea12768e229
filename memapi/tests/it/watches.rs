use std::time::Duration;

use cellplane_memapi::{ApiServer, Verb};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("before", 1)).await.unwrap();
    let mut events = watcher::watcher(widgets.clone(), watcher::Config::default()).boxed();

    let init = next_matching(&mut events, "initial listing", |e| matches!(e, Ok(Event::InitApply(_)))).await;
    let Ok(Event::InitApply(w)) = init else { unreachable!() };
    assert_eq!(w.name_any(), "before");
    next_matching(&mut events, "InitDone", |e| matches!(e, Ok(Event::InitDone))).await.unwrap();

    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let added = next_matching(&mut events, "added", |e| matches!(e, Ok(Event::Apply(_)))).await;
    let Ok(Event::Apply(w)) = added else { unreachable!() };
    assert_eq!((w.name_any().as_str(), w.spec.size), ("w", 1));

    widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    let modified = next_matching(&mut events, "modified", |e| matches!(e, Ok(Event::Apply(_)))).await;
    let Ok(Event::Apply(w)) = modified else { unreachable!() };
    assert_eq!(w.spec.size, 2);

    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    let deleted = next_matching(&mut events, "deleted", |e| matches!(e, Ok(Event::Delete(_)))).await;
    let Ok(Event::Delete(w)) = deleted else { unreachable!() };
    assert_eq!(w.name_any(), "w");
}

#[tokio::test]
async fn raw_watch_event_types_and_initial_state() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();

    // From "0": the current state arrives as ADDED.
    let mut from_zero = widgets.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let first = next_matching(&mut from_zero, "initial ADDED", |_| true).await.unwrap();
    assert!(matches!(first, WatchEvent::Added(ref o) if o.name_any() == "w"));

    // From the object's version: only later changes.
    let mut from_rv = widgets.watch(&WatchParams::default(), &w.resource_version().unwrap()).await.unwrap().boxed();
    widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 5}}))).await.unwrap();
    let next = next_matching(&mut from_rv, "MODIFIED", |e| !matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(matches!(next, Ok(WatchEvent::Modified(ref o)) if o.spec.size == 5), "{next:?}");
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let started = tokio::time::Instant::now();
    let stream = widgets.watch(&WatchParams::default().timeout(1), "0").await.unwrap();
    let events: Vec<_> = tokio::time::timeout(DEADLINE, stream.collect::<Vec<_>>()).await.expect("stream must end");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The closing bookmark tells the client where to resume.
    assert!(matches!(events.last(), Some(Ok(WatchEvent::Bookmark(_)))), "{events:?}");
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version() {
    let server = ApiServer::builder().bookmark_interval(Duration::from_millis(50)).build();
    let (server, client) = setup_with(server);
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut stream = widgets.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    // A change to another kind still advances the bookmark.
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut s = Secret::default();
    s.metadata.name = Some("s".into());
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let latest = server.resource_version().to_string();
    next_matching(
        &mut stream,
        "bookmark at latest",
        |e| matches!(e, Ok(WatchEvent::Bookmark(b)) if b.metadata.resource_version == latest),
    )
    .await
    .unwrap();
    // Without allowWatchBookmarks there are none.
    let mut plain = widgets.watch(&WatchParams::default().disable_bookmarks().timeout(1), "0").await.unwrap().boxed();
    let none = tokio::time::timeout(DEADLINE, async {
        let mut bookmarks = 0;
        while let Some(e) = plain.next().await {
            bookmarks += matches!(e, Ok(WatchEvent::Bookmark(_))) as u32;
        }
        bookmarks
    })
    .await
    .unwrap();
    assert_eq!(none, 0);
}

#[tokio::test]
async fn expired_resource_version_gives_410_in_stream() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    server.compact();
    let mut stream = widgets.watch(&WatchParams::default(), &w.resource_version().unwrap()).await.unwrap().boxed();
    let first = next_matching(&mut stream, "ERROR", |_| true).await.unwrap();
    let WatchEvent::Error(status) = first else { panic!("{first:?}") };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(stream.next().await.is_none(), "the stream ends after the error");
}

/// A reflector whose connection drops while history is compacted away still
/// converges on the true state (relisting if it resumes from before the compaction).
#[tokio::test]
async fn reflector_converges_across_dropped_watches_and_compaction() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(widgets.clone(), watcher::Config::default()))
        .applied_objects()
        .boxed();
    let drive = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready()).await.unwrap().unwrap();
    assert_eq!(reader.len(), 1);

    // Changes the watcher may not have seen, then history loss and a dropped connection.
    widgets.create(&PostParams::default(), &widget("b", 1)).await.unwrap();
    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    server.compact();
    server.close_watches();
    widgets.create(&PostParams::default(), &widget("c", 1)).await.unwrap();

    eventually("reflector converged", || async {
        let mut names: Vec<String> = reader.state().iter().map(|w| w.name_any()).collect();
        names.sort();
        (names == ["b", "c"]).then_some(())
    })
    .await;
    assert!(reader.get(&ObjectRef::new("a").within("default")).is_none());
    drive.abort();
}

#[tokio::test]
async fn watcher_relists_on_410() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let mut events = watcher::watcher(widgets.clone(), watcher::Config::default()).boxed();
    next_matching(&mut events, "InitDone", |e| matches!(e, Ok(Event::InitDone))).await.unwrap();
    let lists_before = server.request_count_for(Verb::List, "widgets");

    // Cut the connection after a change the watcher does not care about was
    // compacted away: resuming from the listed version must be refused.
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let mut s = Secret::default();
    s.metadata.name = Some("bump".into());
    secrets.create(&PostParams::default(), &s).await.unwrap();
    server.compact();
    server.close_watches();
    widgets.create(&PostParams::default(), &widget("b", 1)).await.unwrap();

    let err = next_matching(&mut events, "410 from the watcher", |e| e.is_err()).await;
    assert!(format!("{err:?}").contains("410"), "{err:?}");
    let relisted =
        next_matching(&mut events, "relist", |e| matches!(e, Ok(Event::InitApply(w)) if w.name_any() == "b")).await;
    assert!(relisted.is_ok());
    assert_eq!(server.request_count_for(Verb::List, "widgets"), lists_before + 1);
}

#[tokio::test]
async fn watch_selectors_turn_label_changes_into_added_and_deleted() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let mut stream = widgets
        .watch(&WatchParams::default().labels("team=red"), &w.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let label = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    widgets.patch("w", &PatchParams::default(), &label("red")).await.unwrap();
    let entered = next_matching(&mut stream, "entered", |e| !matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(matches!(entered, Ok(WatchEvent::Added(_))), "{entered:?}");
    widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 3}}))).await.unwrap();
    let changed = next_matching(&mut stream, "modified", |e| !matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(matches!(changed, Ok(WatchEvent::Modified(_))), "{changed:?}");
    widgets.patch("w", &PatchParams::default(), &label("blue")).await.unwrap();
    let left = next_matching(&mut stream, "left", |e| !matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(matches!(left, Ok(WatchEvent::Deleted(_))), "{left:?}");

    // Field selectors on watches too.
    let mut by_name = widgets.watch(&WatchParams::default().fields("metadata.name=other"), "0").await.unwrap().boxed();
    widgets.create(&PostParams::default(), &widget("other", 1)).await.unwrap();
    let added = next_matching(&mut by_name, "other", |e| !matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(matches!(added, Ok(WatchEvent::Added(ref o)) if o.name_any() == "other"), "{added:?}");
}

#[tokio::test]
async fn streaming_list_watcher_converges() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    for name in ["a", "b"] {
        let s = Secret { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher::watcher(secrets.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match next_matching(&mut events, "initial events", |_| true).await.unwrap() {
            Event::InitApply(s) => initial.push(s.name_any()),
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["a", "b"]);
    secrets.delete("a", &DeleteParams::default()).await.unwrap();
    let gone = next_matching(&mut events, "delete", |e| matches!(e, Ok(Event::Delete(_)))).await;
    assert!(gone.is_ok());
}

#[tokio::test]
async fn paged_watcher_lists_everything() {
    let (server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    for i in 0..5 {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("s{i}"));
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(secrets, watcher::Config::default().page_size(2)));
    let drive = tokio::spawn(stream.try_for_each(|_| async { Ok(()) }));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready()).await.unwrap().unwrap();
    assert_eq!(reader.len(), 5);
    assert_eq!(server.request_count_for(Verb::List, "secrets"), 3);
    drive.abort();
}

#[tokio::test]
async fn metadata_watcher_and_get_metadata_receive_partial_objects() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut w = widget("w", 1);
    w.metadata.labels = Some([("team".to_string(), "red".to_string())].into());
    widgets.create(&PostParams::default(), &w).await.unwrap();

    let partial = widgets.get_metadata("w").await.unwrap();
    assert_eq!(partial.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    assert_eq!(partial.labels().get("team").map(String::as_str), Some("red"));

    let partials: Api<PartialObjectMeta<Widget>> = Api::namespaced(client, "default");
    let mut events = watcher::watcher(partials, watcher::Config::default()).boxed();
    let first = next_matching(&mut events, "InitApply", |e| matches!(e, Ok(Event::InitApply(_)))).await;
    let Ok(Event::InitApply(meta)) = first else { unreachable!() };
    assert_eq!(meta.name_any(), "w");
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    let gone = next_matching(&mut events, "Delete", |e| matches!(e, Ok(Event::Delete(_)))).await;
    let Ok(Event::Delete(meta)) = gone else { unreachable!() };
    assert_eq!(meta.types.map(|t| t.kind), Some("PartialObjectMetadata".to_string()));
}
