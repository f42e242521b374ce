//! Strings that Go reads as plain strings and bollard as enums.
//!
//! The engine decodes `Order: "bogus"` happily and refuses it when it
//! converts the spec for swarmkit, with its own text; a few fields it maps
//! instead (an unknown or upper-case protocol is TCP). serde would refuse
//! any value the enum lacks with its own words, so the decoder asks here
//! first. Texts recorded on engine 20.10 (client-json/21-28).

/// What the engine makes of a value the enum does not list.
pub enum Unlisted {
    /// Read as this value instead (swarmkit's enum lookup, zero if unknown).
    Read(String),
    /// Refused with the engine's text.
    Refused(String),
}

/// The engine's answer for `value` at `path` (struct field names from the
/// body's root), or None where the enum's refusal stands.
pub fn unlisted(path: &[&str], value: &str) -> Option<Unlisted> {
    let field = |suffix: &[&str]| path.ends_with(suffix);
    if field(&["UpdateConfig", "Order"]) || field(&["RollbackConfig", "Order"]) {
        return Some(Unlisted::Refused(format!(
            "unrecognized update order {value}"
        )));
    }
    if field(&["UpdateConfig", "FailureAction"]) || field(&["RollbackConfig", "FailureAction"]) {
        return Some(Unlisted::Refused(format!(
            "unrecognized update failure action {value}"
        )));
    }
    if field(&["RestartPolicy", "Condition"]) {
        return Some(Unlisted::Refused(format!(
            "invalid RestartCondition: {value:?}"
        )));
    }
    if field(&["EndpointSpec", "Mode"]) {
        return Some(Unlisted::Refused(format!(
            "invalid resolution mode: {value:?}"
        )));
    }
    if field(&["Mounts", "Type"]) {
        return Some(Unlisted::Refused(format!("invalid MountType: {value:?}")));
    }
    // swarmkit looks ports' enums up upper-cased; unknown is the first value.
    if field(&["Ports", "Protocol"]) {
        return Some(Unlisted::Read(known_or(value, &["tcp", "udp", "sctp"])));
    }
    if field(&["Ports", "PublishMode"]) {
        return Some(Unlisted::Read(known_or(value, &["ingress", "host"])));
    }
    None
}

/// `value` in lower case when it is one of `known`, else the first.
fn known_or(value: &str, known: &[&str]) -> String {
    let lower = value.to_ascii_lowercase();
    match known.contains(&lower.as_str()) {
        true => lower,
        false => known.first().map_or(lower.clone(), |k| k.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_or_maps_as_the_engine_does() {
        let refused = |path: &[&str], v: &str| match unlisted(path, v) {
            Some(Unlisted::Refused(text)) => text,
            _ => String::new(),
        };
        assert_eq!(
            refused(&["RollbackConfig", "Order"], "bogus"),
            "unrecognized update order bogus"
        );
        assert_eq!(
            refused(&["TaskTemplate", "RestartPolicy", "Condition"], "bogus"),
            "invalid RestartCondition: \"bogus\""
        );
        let read = |path: &[&str], v: &str| match unlisted(path, v) {
            Some(Unlisted::Read(v)) => v,
            _ => String::new(),
        };
        assert_eq!(read(&["EndpointSpec", "Ports", "Protocol"], "UDP"), "udp");
        assert_eq!(read(&["EndpointSpec", "Ports", "Protocol"], "bogus"), "tcp");
        assert!(unlisted(&["Spec", "Role"], "bogus").is_none());
    }
}
