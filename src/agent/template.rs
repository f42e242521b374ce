//! swarm's templates: `{{.Service.Name}}`-style fields in a task's env,
//! hostname and mounts, and, in secrets and configs created with
//! `Templating: {"Name": "golang"}`, also `{{env "X"}}`, `{{secret "t"}}`
//! and `{{config "t"}}` (swarmkit's template package).
//!
//! The subset of Go's text/template that swarm templates use: field paths,
//! the three functions with a string literal, comments and the `{{-`/`-}}`
//! trim markers. Anything else is an error naming the action.

use super::spec::{task_name, NodeInfo};
use super::{AgentError, Assignment};

/// The values a template may use (swarmkit's `template.Context`).
pub struct Context {
    service_id: String,
    service_name: String,
    node_id: String,
    node_hostname: String,
    node_os: String,
    node_arch: String,
    task_id: String,
    task_name: String,
    task_slot: String,
}

impl Context {
    pub fn new(a: &Assignment, node: &NodeInfo) -> Self {
        let t = &a.task;
        let node_id = t.node_id.clone().unwrap_or_else(|| node.id.clone());
        Context {
            service_id: t.service_id.clone().unwrap_or_default(),
            service_name: a.service_name.clone(),
            // A task without a slot (global) uses its node's ID, as swarm does.
            task_slot: match t.slot {
                Some(s) if s != 0 => s.to_string(),
                _ => node_id.clone(),
            },
            node_id,
            node_hostname: node.hostname.clone(),
            node_os: node.os.clone(),
            node_arch: node.arch.clone(),
            task_id: t.id.clone().unwrap_or_default(),
            task_name: task_name(a, &node.id),
        }
    }

    fn field(&self, path: &str) -> Result<String, AgentError> {
        let v = match path {
            ".Service.ID" => &self.service_id,
            ".Service.Name" => &self.service_name,
            ".Node.ID" => &self.node_id,
            ".Node.Hostname" => &self.node_hostname,
            ".Node.Platform.OS" => &self.node_os,
            ".Node.Platform.Architecture" => &self.node_arch,
            ".Task.ID" => &self.task_id,
            ".Task.Name" => &self.task_name,
            ".Task.Slot" => &self.task_slot,
            other => {
                return Err(AgentError::Template(format!(
                    "can't evaluate field {other}"
                )))
            }
        };
        Ok(v.clone())
    }
}

/// The functions of a secret's or config's template: what the task itself
/// may see (its env, the secrets and configs it refers to, by target).
pub trait Functions {
    fn env(&self, name: &str) -> String;
    fn secret(&self, target: &str) -> Result<String, AgentError>;
    fn config(&self, target: &str) -> Result<String, AgentError>;
}

/// Expands `input`; `functions` only for payloads.
pub fn expand(
    input: &str,
    ctx: &Context,
    functions: Option<&dyn Functions>,
) -> Result<String, AgentError> {
    if !input.contains("{{") {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| AgentError::Template(format!("unclosed action in {input:?}")))?;
        let mut action = &after[..end];
        // `{{- ` and ` -}}` trim the white space before and after.
        if let Some(a) = action.strip_prefix("- ") {
            out.truncate(out.trim_end().len());
            action = a;
        }
        let trim_after = action.ends_with(" -");
        if trim_after {
            action = &action[..action.len() - 2];
        }
        out.push_str(&evaluate(action.trim(), ctx, functions)?);
        rest = &after[end + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn evaluate(
    action: &str,
    ctx: &Context,
    functions: Option<&dyn Functions>,
) -> Result<String, AgentError> {
    if action.starts_with("/*") && action.ends_with("*/") {
        return Ok(String::new());
    }
    if action.starts_with('.') {
        return ctx.field(action);
    }
    if let Some(literal) = string_literal(action) {
        return Ok(literal);
    }
    let (name, arg) = action
        .split_once(char::is_whitespace)
        .unwrap_or((action, ""));
    let call = |f: &dyn Functions| -> Result<String, AgentError> {
        let arg = string_literal(arg.trim())
            .ok_or_else(|| AgentError::Template(format!("{name}: bad argument {arg:?}")))?;
        match name {
            "env" => Ok(f.env(&arg)),
            "secret" => f.secret(&arg),
            "config" => f.config(&arg),
            _ => unreachable_function(name),
        }
    };
    match (name, functions) {
        ("env" | "secret" | "config", Some(f)) => call(f),
        _ => unreachable_function(name),
    }
}

fn unreachable_function(name: &str) -> Result<String, AgentError> {
    Err(AgentError::Template(format!(
        "function {name:?} not defined"
    )))
}

/// A Go string literal: "…" with backslash escapes, or `…` raw.
fn string_literal(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return Some(raw.to_string());
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl Functions for Fake {
        fn env(&self, name: &str) -> String {
            if name == "MODE" {
                "prod".to_string()
            } else {
                String::new()
            }
        }
        fn secret(&self, target: &str) -> Result<String, AgentError> {
            match target {
                "db_pass" => Ok("s3cret".to_string()),
                _ => Err(AgentError::Template(format!(
                    "secret target {target} not found"
                ))),
            }
        }
        fn config(&self, target: &str) -> Result<String, AgentError> {
            Err(AgentError::Template(format!(
                "config target {target} not found"
            )))
        }
    }

    fn context(slot: Option<i64>) -> Context {
        let mut a = Assignment {
            service_name: "web".to_string(),
            ..Default::default()
        };
        a.task.id = Some("t1".to_string());
        a.task.service_id = Some("s1".to_string());
        a.task.node_id = Some("n1".to_string());
        a.task.slot = slot;
        let node = NodeInfo {
            id: "n1".to_string(),
            hostname: "host".to_string(),
            os: "linux".to_string(),
            arch: "x86_64".to_string(),
        };
        Context::new(&a, &node)
    }

    #[test]
    fn expands_fields_functions_comments_and_trims() {
        let ctx = context(Some(2));
        let text = "svc={{.Service.Name}} slot={{ .Task.Slot }} on {{.Node.Hostname}}\n\
                    mode={{env \"MODE\"}} pass={{ secret \"db_pass\" }}{{/* note */}}\n\
                    a   {{- \" \" -}}   b {{env `NONE`}}.";
        assert_eq!(
            expand(text, &ctx, Some(&Fake)).unwrap(),
            "svc=web slot=2 on host\nmode=prod pass=s3cret\na b ."
        );
        // A global task's slot is its node's ID.
        assert_eq!(
            expand("{{.Task.Slot}}", &context(None), None).unwrap(),
            "n1"
        );
    }

    #[test]
    fn unknown_fields_functions_and_targets_are_errors() {
        let ctx = context(Some(1));
        for bad in [
            "{{.Service.Nope}}",
            "{{env \"X\"}}",
            "{{if .Task.ID}}x{{end}}",
            "{{.Task.ID",
        ] {
            assert!(expand(bad, &ctx, None).is_err(), "{bad}");
        }
        let err = expand("{{secret \"other\"}}", &ctx, Some(&Fake)).unwrap_err();
        assert!(
            err.to_string().contains("secret target other not found"),
            "{err}"
        );
    }
}
