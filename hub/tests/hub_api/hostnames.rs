//! Per-hostname backend health: agents' route hostname reports become committed serving
//! states (on transitions only) that DNS answers follow.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{
    Admin, Agent, ZONE, answers, cluster_body, dns_query, eventually, single_with,
};

type Hosts = Vec<(&'static str, u32, u32)>;

/// Reports every 100 ms (gateway ready) with the route hostnames `hosts` holds.
fn report_hosts(mut agent: Agent, hosts: watch::Receiver<Hosts>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = hosts.borrow().clone();
            agent.report_with(&[true], &current).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if hosts.has_changed().is_err() {
                return;
            }
        }
    })
}

async fn serving(admin: &Admin, cluster: &str) -> Option<Value> {
    let body = admin
        .get_ok(&format!("/v1/clusters/{cluster}?stale=true"))
        .await;
    body["hostnames"].get(format!("app.{ZONE}")).cloned()
}

async fn wait_serving(admin: &Admin, cluster: &str, want: bool) -> Value {
    eventually(
        Duration::from_secs(5),
        &format!("{cluster} serving={want}"),
        || async {
            let state = serving(admin, cluster).await?;
            (state["serving"] == want).then_some(state)
        },
    )
    .await
}

async fn wait_answer(hub: &meridian_hub::HubHandle, want: &[&str]) {
    let dns = hub.dns_addr();
    eventually(
        Duration::from_secs(5),
        &format!("answer {want:?}"),
        || async {
            let answer = dns_query(dns, &format!("app.{ZONE}."), RecordType::A).await?;
            let mut got = answers(&answer);
            got.sort();
            (got == want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_drops_a_cluster_whose_backends_for_the_hostname_are_down() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway's own verdict must stay healthy throughout: allow 1 s without a report,
    // so a pause of a loaded machine is not a missed-report verdict.
    let hub = single_with(dir.path(), |config| config.health.missed_reports = 10).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    admin
        .put_ok("/v1/clusters/eu-west", &cluster_body("eu", "127.0.1.2"))
        .await;
    admin
        .put_ok(
            &format!("/v1/hostnames/app.{ZONE}"),
            &json!({"targets": [{"cluster": "us-east"}, {"cluster": "eu-west"}],
                    "routing": {"max_answers": 2}}),
        )
        .await;

    // Both clusters serve the hostname: one through an exact route, one through a wildcard.
    let (us_hosts, us_rx) = watch::channel::<Hosts>(vec![("app.demo.meridian.test", 2, 2)]);
    let (eu_hosts, eu_rx) = watch::channel::<Hosts>(vec![("*.demo.meridian.test", 2, 2)]);
    let mut tasks = Vec::new();
    for (cluster, rx) in [("us-east", us_rx), ("eu-west", eu_rx)] {
        let mut agent = Agent::connect(&hub, cluster).await;
        agent.register(&[]).await.unwrap();
        agent.open().await.unwrap();
        tasks.push(report_hosts(agent, rx));
    }
    admin
        .wait_verdict("us-east", "healthy", Duration::from_secs(5))
        .await;
    admin
        .wait_verdict("eu-west", "healthy", Duration::from_secs(5))
        .await;
    wait_serving(&admin, "us-east", true).await;
    let eu = wait_serving(&admin, "eu-west", true).await;
    assert!(
        eu["reason"]
            .as_str()
            .unwrap()
            .contains("route hostname *.demo.meridian.test"),
        "{eu}"
    );
    wait_answer(&hub, &["127.0.1.1", "127.0.1.2"]).await;

    // eu-west's backends die; its gateway stays up. DNS stops answering eu-west for the
    // hostname, and the API says why.
    eu_hosts.send_replace(vec![("*.demo.meridian.test", 0, 2)]);
    let eu = wait_serving(&admin, "eu-west", false).await;
    assert_eq!(
        eu["reason"],
        "0 of 2 backend endpoints ready (route hostname *.demo.meridian.test)"
    );
    assert!(eu["since_unix_ms"].as_u64().unwrap() > 0);
    wait_answer(&hub, &["127.0.1.1"]).await;
    let cluster = admin.get_ok("/v1/clusters/eu-west").await;
    assert_eq!(
        cluster["health"]["verdict"], "healthy",
        "the gateway is fine"
    );
    let status = admin.get_ok("/v1/status").await;
    let listed = status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "eu-west")
        .unwrap()
        .clone();
    assert_eq!(listed["hostnames"][format!("app.{ZONE}")]["serving"], false);
    let explained = admin
        .get_ok(&format!(
            "/v1/dns/explain?name=app.{ZONE}&type=A&client=127.0.0.1"
        ))
        .await;
    assert!(
        explained
            .to_string()
            .contains("cannot serve app.demo.meridian.test"),
        "{explained}"
    );

    // Nobody can serve it (the app is down everywhere): the backend signal is ignored and
    // both gateways are answered again rather than nothing.
    us_hosts.send_replace(vec![("app.demo.meridian.test", 0, 2)]);
    wait_serving(&admin, "us-east", false).await;
    wait_answer(&hub, &["127.0.1.1", "127.0.1.2"]).await;

    // Recovery, with rise = 2 consecutive good reports.
    us_hosts.send_replace(vec![("app.demo.meridian.test", 2, 2)]);
    eu_hosts.send_replace(vec![("*.demo.meridian.test", 1, 2)]);
    wait_serving(&admin, "us-east", true).await;
    wait_serving(&admin, "eu-west", true).await;
    wait_answer(&hub, &["127.0.1.1", "127.0.1.2"]).await;

    // Many reports, few writes: one committed change per transition.
    let audit = admin.get_ok("/v1/audit?limit=1000").await;
    let changes = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("set hostname"))
        .count();
    assert_eq!(changes, 6, "{audit}");

    // Dropping eu-west from the policy forgets its serving state.
    admin
        .put_ok(
            &format!("/v1/hostnames/app.{ZONE}"),
            &json!({"targets": [{"cluster": "us-east"}]}),
        )
        .await;
    assert!(serving(&admin, "eu-west").await.is_none());
    drop((us_hosts, eu_hosts));
    for task in tasks {
        let _ = task.await;
    }
    hub.shutdown().await;
}
