use super::*;

fn of(yaml: &str) -> Health {
    let object: Value = serde_norway::from_str(yaml).expect("a YAML fixture");
    health(&object)
}

fn progressing(why: &str) -> Health {
    Health::Progressing(why.into())
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, generation: 2}\n";

#[test]
fn a_rolled_out_deployment_is_healthy() {
    let yaml = format!(
        "{DEPLOYMENT}spec: {{replicas: 3}}\nstatus: {{observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3,\n  conditions: [{{type: Progressing, status: 'True', reason: NewReplicaSetAvailable}}]}}\n"
    );
    assert_eq!(of(&yaml), Health::Healthy);
}

#[test]
fn a_rolling_deployment_says_what_it_waits_for() {
    let yaml = format!(
        "{DEPLOYMENT}spec: {{replicas: 3}}\nstatus: {{observedGeneration: 2, replicas: 4, updatedReplicas: 1, readyReplicas: 3, availableReplicas: 2}}\n"
    );
    assert_eq!(of(&yaml), progressing("1/3 updated, 2/3 available, 3 old replicas terminating"));
}

#[test]
fn a_deployment_whose_spec_is_not_observed_yet_is_progressing() {
    let yaml = format!(
        "{DEPLOYMENT}spec: {{replicas: 1}}\nstatus: {{observedGeneration: 1, replicas: 1, updatedReplicas: 1, availableReplicas: 1}}\n"
    );
    assert_eq!(of(&yaml), progressing("generation 2 not observed yet (status is for 1)"));
    let fresh = format!("{DEPLOYMENT}spec: {{replicas: 1}}\n");
    assert_eq!(of(&fresh), progressing("not observed by its controller yet"));
}

#[test]
fn a_deployment_scaled_to_zero_is_healthy() {
    let yaml = format!("{DEPLOYMENT}spec: {{replicas: 0}}\nstatus: {{observedGeneration: 2}}\n");
    assert_eq!(of(&yaml), Health::Healthy);
}

#[test]
fn a_deployment_past_its_progress_deadline_has_failed() {
    let yaml = format!(
        "{DEPLOYMENT}spec: {{replicas: 3}}\nstatus: {{observedGeneration: 2, replicas: 3, updatedReplicas: 3, availableReplicas: 1,\n  conditions: [{{type: Progressing, status: 'False', reason: ProgressDeadlineExceeded}}]}}\n"
    );
    assert_eq!(of(&yaml), Health::Failed("1/3 available; ProgressDeadlineExceeded".into()));
}

#[test]
fn stateful_sets_roll_out_revision_by_revision() {
    let base = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, generation: 1}\nspec: {replicas: 2}\n";
    let done = format!(
        "{base}status: {{observedGeneration: 1, readyReplicas: 2, availableReplicas: 2, updatedReplicas: 2, currentRevision: db-1, updateRevision: db-1}}\n"
    );
    assert_eq!(of(&done), Health::Healthy);
    let rolling = format!(
        "{base}status: {{observedGeneration: 1, readyReplicas: 2, availableReplicas: 2, updatedReplicas: 1, currentRevision: db-1, updateRevision: db-2}}\n"
    );
    assert_eq!(of(&rolling), progressing("1/2 updated, rolling out revision db-2"));
}

#[test]
fn daemon_sets_count_their_scheduled_pods() {
    let base = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, generation: 1}\n";
    let done = format!(
        "{base}status: {{observedGeneration: 1, desiredNumberScheduled: 3, updatedNumberScheduled: 3, numberAvailable: 3, numberReady: 3}}\n"
    );
    assert_eq!(of(&done), Health::Healthy);
    let rolling = format!(
        "{base}status: {{observedGeneration: 1, desiredNumberScheduled: 3, updatedNumberScheduled: 3, numberAvailable: 1}}\n"
    );
    assert_eq!(of(&rolling), progressing("1/3 available"));
}

#[test]
fn jobs_are_healthy_when_complete_and_failed_when_failed() {
    let base = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\n";
    let complete = format!("{base}status: {{succeeded: 1, conditions: [{{type: Complete, status: 'True'}}]}}\n");
    assert_eq!(of(&complete), Health::Healthy);
    let failed = format!(
        "{base}status: {{failed: 6, conditions: [{{type: Failed, status: 'True', reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}}]}}\n"
    );
    assert_eq!(
        of(&failed),
        Health::Failed("Failed=True (BackoffLimitExceeded): Job has reached the specified backoff limit".into())
    );
    let running = format!("{base}status: {{active: 1}}\n");
    assert_eq!(of(&running), progressing("1 active, 0 succeeded"));
}

const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, generation: 3}\n";

#[test]
fn custom_resources_follow_their_ready_condition() {
    let ready = format!(
        "{WIDGET}status: {{observedGeneration: 3, conditions: [{{type: Ready, status: 'True', observedGeneration: 3}}]}}\n"
    );
    assert_eq!(of(&ready), Health::Healthy);
    let not_ready = format!(
        "{WIDGET}status: {{conditions: [{{type: Ready, status: 'False', reason: Waiting, message: no backend}}]}}\n"
    );
    assert_eq!(of(&not_ready), progressing("Ready=False (Waiting): no backend"));
    let stalled = format!("{WIDGET}status: {{conditions: [{{type: Stalled, status: 'True', reason: BadSpec}}]}}\n");
    assert_eq!(of(&stalled), Health::Failed("Stalled=True (BadSpec)".into()));
}

#[test]
fn a_ready_condition_for_an_older_generation_does_not_count() {
    let by_condition =
        format!("{WIDGET}status: {{conditions: [{{type: Ready, status: 'True', observedGeneration: 2}}]}}\n");
    assert_eq!(of(&by_condition), progressing("Ready is for generation 2, not 3"));
    let by_status =
        format!("{WIDGET}status: {{observedGeneration: 2, conditions: [{{type: Ready, status: 'True'}}]}}\n");
    assert_eq!(of(&by_status), progressing("generation 3 not observed yet (status is for 2)"));
}

#[test]
fn what_has_no_status_is_healthy_by_existing() {
    assert_eq!(of(WIDGET), Health::Healthy);
    assert_eq!(of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n"), Health::Healthy);
}

#[test]
fn an_object_being_deleted_is_not_healthy() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s, deletionTimestamp: '2026-01-01T00:00:00Z'}\n";
    assert_eq!(of(yaml), progressing("being deleted"));
}

#[test]
fn a_report_names_each_unhealthy_object() {
    let reference = |text: &str| text.parse::<ObjectRef>().unwrap();
    let report = HealthReport {
        objects: vec![
            Assessed { object: reference("/v1/ConfigMap/svc/settings"), health: Health::Healthy },
            Assessed {
                object: reference("apps/v1/Deployment/svc/frontend"),
                health: Health::Failed("1/3 available; ProgressDeadlineExceeded".into()),
            },
            Assessed { object: reference("example.com/v1/Widget/svc/w"), health: progressing("not found") },
        ],
    };
    assert!(!report.is_healthy() && report.has_failed());
    assert_eq!(
        report.to_string(),
        "Deployment svc/frontend: 1/3 available; ProgressDeadlineExceeded\nWidget svc/w: not found"
    );
}
