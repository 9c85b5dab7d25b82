//! Tests for the directory source: change detection, last good content, deletions.

use std::path::Path;
use std::time::Duration;

use super::*;

fn service(name: &str, port: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  ports:\n  - name: http\n    port: {port}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A compact description of updates: `init`, `+a.yaml(n)` (InitApply with n objects),
/// `done`, `apply a.yaml(n)`, `delete a.yaml`, `problems[a.yaml doc 1, ...]`.
fn describe(updates: &[SourceUpdate]) -> Vec<String> {
    updates
        .iter()
        .map(|update| match update {
            SourceUpdate::Event(Event::Init) => "init".to_string(),
            SourceUpdate::Event(Event::InitApply(unit)) => {
                format!("+{}({})", unit.id, unit.objects.len())
            }
            SourceUpdate::Event(Event::InitDone) => "done".to_string(),
            SourceUpdate::Event(Event::Apply(unit)) => {
                format!("apply {}({})", unit.id, unit.objects.len())
            }
            SourceUpdate::Event(Event::Delete(unit)) => format!("delete {}", unit.id),
            SourceUpdate::Problems(problems) => format!(
                "problems[{}]",
                problems
                    .iter()
                    .map(|p| format!(
                        "{}{}",
                        p.source,
                        p.doc.map(|d| format!(" doc {d}")).unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect()
}

/// Polls twice: a change is read once it stayed the same for a poll, so the first poll after
/// a write says nothing and the second reads it.
fn settled(source: &mut FileSource) -> Vec<SourceUpdate> {
    let mut updates = source.poll();
    updates.extend(source.poll());
    updates
}

fn source(dir: &Path) -> FileSource {
    FileSource::new(dir, Duration::from_millis(500))
}

#[test]
fn first_poll_lists_every_valid_file_then_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", service("one", 80), service("two", 81)),
    );
    write(dir.path(), "b.yml", &service("three", 80));
    write(dir.path(), "notes.txt", "not config");
    write(dir.path(), ".a.yaml.swp", "kind: [");
    let mut source = source(dir.path());

    assert_eq!(
        describe(&settled(&mut source)),
        ["init", "+a.yaml(2)", "+b.yml(1)", "done", "problems[]"]
    );
    // Nothing changed: nothing to say (files just written are re-read, but their bytes match).
    assert!(settled(&mut source).is_empty());

    write(dir.path(), "b.yml", &service("three", 8080));
    assert_eq!(describe(&settled(&mut source)), ["apply b.yml(1)"]);

    // Same bytes written again (a touch): no event.
    write(dir.path(), "b.yml", &service("three", 8080));
    assert!(settled(&mut source).is_empty());
}

#[test]
fn invalid_edit_keeps_last_good_content_and_reports_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service("one", 80));
    let mut source = source(dir.path());
    settled(&mut source);

    // Bad YAML: no apply, one problem naming the file and document.
    write(dir.path(), "a.yaml", "apiVersion: v1\nkind: [unclosed\n");
    assert_eq!(describe(&settled(&mut source)), ["problems[a.yaml doc 1]"]);
    assert_eq!(
        source.files["a.yaml"].last_good.as_ref().map(|o| o.len()),
        Some(1)
    );

    // An object that validation drops (a type error): also not applied, with the field.
    write(
        dir.path(),
        "a.yaml",
        &service("one", 80).replace("port: 80", "port: [80]"),
    );
    let updates = settled(&mut source);
    assert_eq!(describe(&updates), ["problems[a.yaml doc 1]"]);
    let SourceUpdate::Problems(problems) = &updates[0] else {
        panic!()
    };
    assert_eq!(problems[0].path, "spec.ports[0].port", "{}", problems[0]);

    // A valid edit applies and clears the problem.
    write(dir.path(), "a.yaml", &service("one", 8081));
    assert_eq!(
        describe(&settled(&mut source)),
        ["apply a.yaml(1)", "problems[]"]
    );

    // Going back to exactly the last good content after a bad edit clears the problem
    // without an apply (nothing changed for the index).
    write(dir.path(), "a.yaml", "kind: [");
    settled(&mut source);
    write(dir.path(), "a.yaml", &service("one", 8081));
    assert_eq!(describe(&settled(&mut source)), ["problems[]"]);
}

#[test]
fn a_file_invalid_from_the_start_contributes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.yaml", "kind: [");
    write(dir.path(), "good.yaml", &service("one", 80));
    let mut source = source(dir.path());
    assert_eq!(
        describe(&settled(&mut source)),
        ["init", "+good.yaml(1)", "done", "problems[bad.yaml doc 1]"]
    );
}

#[test]
fn deleting_a_file_removes_its_objects_and_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service("one", 80));
    write(dir.path(), "b.yaml", "kind: [");
    let mut source = source(dir.path());
    settled(&mut source);

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert_eq!(
        describe(&settled(&mut source)),
        ["delete a.yaml", "problems[]"]
    );
    assert!(settled(&mut source).is_empty());
}

#[test]
fn an_unreadable_directory_changes_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.yaml", &service("one", 80));
    let mut source = source(&dir);
    settled(&mut source);

    std::fs::rename(&dir, parent.path().join("moved")).unwrap();
    let updates = settled(&mut source);
    assert_eq!(updates.len(), 1, "{:?}", describe(&updates));
    let SourceUpdate::Problems(problems) = &updates[0] else {
        panic!()
    };
    assert!(
        problems[0].message.contains("cannot list directory"),
        "{}",
        problems[0]
    );
    assert!(
        settled(&mut source).is_empty(),
        "the same problem is not repeated"
    );

    std::fs::rename(parent.path().join("moved"), &dir).unwrap();
    assert_eq!(describe(&settled(&mut source)), ["problems[]"]);
}

#[test]
fn same_length_rewrites_in_one_clock_tick_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service("one", 80));
    let mut source = source(dir.path());
    settled(&mut source);
    // Same length, written right after the first read: the fingerprint may be identical,
    // but the file is young, so it is re-read.
    write(dir.path(), "a.yaml", &service("one", 81));
    assert_eq!(describe(&settled(&mut source)), ["apply a.yaml(1)"]);
}

#[tokio::test]
async fn run_sends_updates_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service("one", 80));
    let (updates_tx, mut updates_rx) = tokio::sync::mpsc::channel(16);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        FileSource::new(dir.path(), Duration::from_millis(20)).run(updates_tx, shutdown_rx),
    );

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("problems[]") {
        let update = tokio::time::timeout(Duration::from_secs(5), updates_rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.extend(describe(&[update]));
    }
    assert_eq!(seen, ["init", "+a.yaml(1)", "done", "problems[]"]);

    write(dir.path(), "a.yaml", &service("one", 9090));
    let update = tokio::time::timeout(Duration::from_secs(5), updates_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(describe(&[update]), ["apply a.yaml(1)"]);

    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

const GATEWAY_HTTP_AND_TCP: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {name: web, port: 8080, protocol: HTTP}\n  - {name: db, port: 5432, protocol: TCP}\n";

const ROUTE_ONE_BAD_RULE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {value: /ok}}]\n  - matches: [{queryParams: [{name: q, value: ''}]}]\n";

#[test]
fn problems_that_keep_their_object_do_not_hold_the_file_back() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "gw.yaml", GATEWAY_HTTP_AND_TCP);
    write(dir.path(), "r.yaml", ROUTE_ONE_BAD_RULE);
    let mut source = source(dir.path());
    let updates = settled(&mut source);
    // Both files are applied (the TCP listener and the bad rule become status conditions),
    // and their problems are listed, marked not fatal.
    assert_eq!(
        describe(&updates),
        [
            "init",
            "+gw.yaml(1)",
            "+r.yaml(1)",
            "done",
            "problems[gw.yaml doc 1, r.yaml doc 1]"
        ]
    );
    let Some(SourceUpdate::Problems(problems)) = updates.last() else {
        panic!()
    };
    assert!(problems.iter().all(|p| !p.fatal), "{problems:?}");
    assert_eq!(problems[0].path, "spec.listeners[1].protocol");

    // An edit that adds an HTTP listener to the Gateway with the TCP one is applied too,
    // rather than freezing the Gateway at its last content without problems.
    write(
        dir.path(),
        "gw.yaml",
        &format!("{GATEWAY_HTTP_AND_TCP}  - {{name: web2, port: 8081, protocol: HTTP}}\n"),
    );
    let updates = settled(&mut source);
    assert_eq!(describe(&updates), ["apply gw.yaml(1)"]);
    let SourceUpdate::Event(Event::Apply(unit)) = &updates[0] else {
        panic!()
    };
    let meridian_gwapi::Resource::Gateway(gateway) = &unit.objects[0].resource else {
        panic!()
    };
    assert_eq!(gateway.spec.listeners.len(), 3);

    // A fatal problem in the same file still keeps the last good content.
    write(
        dir.path(),
        "gw.yaml",
        &GATEWAY_HTTP_AND_TCP.replace("gatewayClassName: meridian", "gatewayClassName: ''"),
    );
    let updates = settled(&mut source);
    assert_eq!(
        describe(&updates),
        ["problems[gw.yaml doc 1, gw.yaml doc 1, r.yaml doc 1]"]
    );
    assert_eq!(
        source.files["gw.yaml"]
            .last_good
            .as_ref()
            .map(|objects| objects.len()),
        Some(1)
    );
}

#[test]
fn a_change_is_read_once_it_stayed_the_same_for_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service("one", 80));
    let mut source = source(dir.path());
    source.poll();

    // A writer has written a prefix that parses (the second Service's first lines, without
    // its ports): nothing is read at the poll that first sees it...
    let full = format!("{}---\n{}", service("one", 80), service("two", 81));
    let prefix = &full[..full.find("spec:\n  ports").unwrap() + "spec:\n".len()];
    write(dir.path(), "a.yaml", prefix);
    assert_eq!(describe(&source.poll()), Vec::<String>::new());
    // ...nor at the next one if the writer was still at it (the file changed again)...
    write(dir.path(), "a.yaml", &full);
    assert_eq!(describe(&source.poll()), Vec::<String>::new());
    // ...and once it stayed the same for a poll, the whole file is read.
    let updates = source.poll();
    assert_eq!(describe(&updates), ["apply a.yaml(2)"]);

    // A new file: read at the second poll that sees it.
    write(dir.path(), "b.yaml", &service("three", 80));
    assert!(source.poll().is_empty());
    assert_eq!(describe(&source.poll()), ["apply b.yaml(1)"]);
}
