//! Kubernetes Events for status changes: when a status write changes a condition's status or
//! reason (of the object, a listener, or one of Meridian's route parents or policy
//! ancestors), the agent records an Event on the object, so `kubectl describe` and `kubectl
//! get events` show when and why a route stopped being accepted or a listener was
//! programmed. Published with kube-runtime's `Recorder` (events.k8s.io/v1; repeats of the
//! same event within its cache window become a series, not new objects).

use serde_json::Value;

/// One condition change, as the Event says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The condition type (`Accepted`, `Programmed`, `ResolvedRefs`, ...): the Event's
    /// action.
    pub(crate) condition: String,
    /// Its new status.
    pub(crate) status: String,
    /// Its new reason: the Event's reason.
    pub(crate) reason: String,
    /// Where it sits (`listener https`, `parent app/gw/http`; empty for the object's own):
    /// the Event's `regarding.fieldPath`, so that the same change in two places is two
    /// Events, not one series.
    pub(crate) scope: String,
    /// Where it sits and its message: the Event's note.
    pub(crate) note: String,
}

impl Transition {
    /// Whether the change is good news (a Normal Event) rather than a Warning: the condition
    /// is True, or False for the conditions whose True means trouble.
    pub(crate) fn is_normal(&self) -> bool {
        const TRUE_MEANS_TROUBLE: [&str; 3] = [
            "Conflicted",
            "PartiallyInvalid",
            "InsecureFrontendValidationMode",
        ];
        let trouble_when_true = TRUE_MEANS_TROUBLE.contains(&self.condition.as_str());
        (self.status == "True") != trouble_when_true
    }
}

/// The Event notes' limit (events.k8s.io/v1 `note`: 1 kB).
const NOTE_LIMIT: usize = 1024;

/// The condition changes from `old` to `new` (two `status` objects); entries of other
/// controllers (a route parent whose `controllerName` is not `controller`) are skipped.
pub(crate) fn transitions(old: &Value, new: &Value, controller: &str) -> Vec<Transition> {
    let mut out = Vec::new();
    compare(&old["conditions"], &new["conditions"], "", &mut out);
    for (list, label_of) in [
        ("listeners", listener_label as fn(&Value) -> Option<String>),
        ("parents", |entry: &Value| {
            ref_label("parent", &entry["parentRef"])
        }),
        ("ancestors", |entry: &Value| {
            ref_label("ancestor", &entry["ancestorRef"])
        }),
    ] {
        let Some(entries) = new[list].as_array() else {
            continue;
        };
        for entry in entries {
            if entry
                .get("controllerName")
                .and_then(Value::as_str)
                .is_some_and(|name| name != controller)
            {
                continue;
            }
            let Some(label) = label_of(entry) else {
                continue;
            };
            let before = old[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|candidate| label_of(candidate).as_deref() == Some(label.as_str()))
                .map_or(&Value::Null, |candidate| &candidate["conditions"]);
            compare(before, &entry["conditions"], &label, &mut out);
        }
    }
    out
}

fn listener_label(entry: &Value) -> Option<String> {
    entry["name"]
        .as_str()
        .map(|name| format!("listener {name}"))
}

/// `parent NS/NAME/SECTION:PORT`, with the kind (and group) before the name when the
/// reference is not to a Gateway, so that two references never share a label.
fn ref_label(what: &str, reference: &Value) -> Option<String> {
    let name = reference["name"].as_str()?;
    let mut label = format!("{what} ");
    let kind = reference["kind"].as_str().unwrap_or("Gateway");
    let group = reference["group"]
        .as_str()
        .unwrap_or("gateway.networking.k8s.io");
    if kind != "Gateway" || group != "gateway.networking.k8s.io" {
        label.push_str(kind);
        if !group.is_empty() {
            label.push('.');
            label.push_str(group);
        }
        label.push(' ');
    }
    if let Some(namespace) = reference["namespace"].as_str() {
        label.push_str(namespace);
        label.push('/');
    }
    label.push_str(name);
    if let Some(section) = reference["sectionName"].as_str() {
        label.push('/');
        label.push_str(section);
    }
    if let Some(port) = reference["port"].as_u64() {
        label.push_str(&format!(":{port}"));
    }
    Some(label)
}

/// Appends the conditions of `new` whose status or reason differ from `old`'s condition of
/// the same type (or that `old` lacks).
fn compare(old: &Value, new: &Value, scope: &str, out: &mut Vec<Transition>) {
    for condition in new.as_array().into_iter().flatten() {
        let (Some(type_), Some(status)) =
            (condition["type"].as_str(), condition["status"].as_str())
        else {
            continue;
        };
        let reason = condition["reason"].as_str().unwrap_or_default();
        let unchanged = old.as_array().into_iter().flatten().any(|before| {
            before["type"].as_str() == Some(type_)
                && before["status"].as_str() == Some(status)
                && before["reason"].as_str().unwrap_or_default() == reason
        });
        if unchanged {
            continue;
        }
        let message = condition["message"].as_str().unwrap_or_default();
        let mut note = if scope.is_empty() {
            format!("{type_}={status}: {message}")
        } else {
            format!("{scope}: {type_}={status}: {message}")
        };
        truncate(&mut note, NOTE_LIMIT);
        out.push(Transition {
            condition: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            scope: scope.to_string(),
            note,
        });
    }
}

/// Cuts `text` to at most `limit` bytes, on a character boundary.
fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const OURS: &str = "meridian.dev/gateway-controller";

    #[test]
    fn a_new_status_reports_every_condition_and_an_unchanged_one_nothing() {
        let status = json!({"conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok"},
            {"type": "Programmed", "status": "True", "reason": "Programmed", "message": ""},
        ]});
        let all = transitions(&Value::Null, &status, OURS);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].condition, "Accepted");
        assert_eq!(all[0].note, "Accepted=True: ok");
        assert!(transitions(&status, &status, OURS).is_empty());
    }

    #[test]
    fn route_parents_are_matched_by_parent_ref_and_other_controllers_skipped() {
        let parent = |status: &str, reason: &str| {
            json!({"parentRef": {"name": "gw", "namespace": "infra", "sectionName": "http"},
                   "controllerName": OURS,
                   "conditions": [{"type": "ResolvedRefs", "status": status, "reason": reason,
                                   "message": "backend web:8080"}]})
        };
        let other = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x",
                           "conditions": [{"type": "Accepted", "status": "False", "reason": "X"}]});
        let old = json!({"parents": [parent("True", "ResolvedRefs"), other.clone()]});
        let new = json!({"parents": [other, parent("False", "BackendNotFound")]});
        let got = transitions(&old, &new, OURS);
        assert_eq!(
            got,
            vec![Transition {
                condition: "ResolvedRefs".into(),
                status: "False".into(),
                reason: "BackendNotFound".into(),
                scope: "parent infra/gw/http".into(),
                note: "parent infra/gw/http: ResolvedRefs=False: backend web:8080".into(),
            }]
        );
        assert!(!got[0].is_normal());
    }

    #[test]
    fn references_differing_by_port_or_kind_are_told_apart() {
        let entry = |reference: Value| {
            json!({"ancestorRef": reference, "controllerName": OURS,
                   "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]})
        };
        let gateway_80 = json!({"name": "gw", "port": 80});
        let gateway_443 = json!({"name": "gw", "port": 443});
        let service = json!({"name": "gw", "kind": "Service", "group": ""});
        let status = json!({"ancestors": [entry(gateway_80), entry(gateway_443), entry(service)]});
        // Written as it was: nothing changed, whatever order the entries come in.
        let shuffled = json!({"ancestors": [
            status["ancestors"][2].clone(), status["ancestors"][0].clone(), status["ancestors"][1].clone()
        ]});
        assert!(transitions(&status, &shuffled, OURS).is_empty());
        let scopes: Vec<String> = transitions(&Value::Null, &status, OURS)
            .into_iter()
            .map(|t| t.scope)
            .collect();
        assert_eq!(
            scopes,
            ["ancestor gw:80", "ancestor gw:443", "ancestor Service gw"]
        );
    }

    #[test]
    fn true_is_trouble_for_conflicted_and_partially_invalid() {
        let status = json!({"listeners": [{"name": "http", "conditions": [
            {"type": "Conflicted", "status": "False", "reason": "NoConflicts"},
            {"type": "PartiallyInvalid", "status": "True", "reason": "UnsupportedValue"},
            {"type": "Programmed", "status": "False", "reason": "Invalid"},
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
        ]}]});
        let normal: Vec<bool> = transitions(&Value::Null, &status, OURS)
            .iter()
            .map(Transition::is_normal)
            .collect();
        assert_eq!(normal, [true, false, false, true]);
    }

    #[test]
    fn listener_reason_changes_count_and_notes_are_bounded() {
        let long = "x".repeat(5000);
        let old = json!({"listeners": [{"name": "https", "conditions": [
            {"type": "Programmed", "status": "False", "reason": "Invalid", "message": "a"}]}]});
        let new = json!({"listeners": [{"name": "https", "conditions": [
            {"type": "Programmed", "status": "False", "reason": "Pending", "message": long}]}]});
        let got = transitions(&old, &new, OURS);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, "Pending");
        assert!(
            got[0]
                .note
                .starts_with("listener https: Programmed=False: x")
        );
        assert_eq!(got[0].note.len(), NOTE_LIMIT);
    }
}
