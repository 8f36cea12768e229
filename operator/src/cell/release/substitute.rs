//! `${var}` substitution in the text of plain manifests, by the rules of Flux's post-build
//! substitution: `${name}`, `${name:=default}`, `$${name}` for a literal `${name}`. A `$` in any
//! other position (`$HOME`, `$1`) is left as it is.

use std::collections::{BTreeMap, BTreeSet};

/// Why a text could not be substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubstituteError {
    /// Variables without a value or a default, by name.
    Missing(BTreeSet<String>),
    /// A `${...}` that is not a variable reference.
    Syntax(String),
}

/// `text` with every `${name}` and `${name:=default}` replaced by its variable's value (or
/// the default when there is none) and `$${` unescaped to `${`.
pub fn substitute(text: &str, variables: &BTreeMap<String, String>) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let mut missing = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix("${") {
            let Some(end) = reference.find('}') else {
                return Err(SubstituteError::Syntax(format!("unterminated {:?}", excerpt(after))));
            };
            match resolve(&reference[..end], variables)? {
                Some(value) => out.push_str(value),
                None => {
                    missing.insert(name_of(&reference[..end]).to_string());
                }
            }
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() { Ok(out) } else { Err(SubstituteError::Missing(missing)) }
}

fn name_of(reference: &str) -> &str {
    reference.split_once(":=").map_or(reference, |(name, _)| name)
}

/// The value of one reference (the text between `${` and `}`), None when it has neither a
/// value nor a default.
fn resolve<'a>(
    reference: &'a str,
    variables: &'a BTreeMap<String, String>,
) -> Result<Option<&'a str>, SubstituteError> {
    let (name, default) = match reference.split_once(":=") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    if !is_variable_name(name) {
        return Err(SubstituteError::Syntax(format!(
            "${{{reference}}} is not a variable reference (${{name}} or ${{name:=default}}, name [A-Za-z_][A-Za-z0-9_]*); \
             write $${{ for a literal ${{"
        )));
    }
    Ok(variables.get(name).map(String::as_str).or(default))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("cell", "eu-1"), ("replicas", "3"), ("empty", "")].map(|(k, v)| (k.to_string(), v.to_string())).into()
    }

    #[test]
    fn references_take_their_values() {
        assert_eq!(
            substitute("name: web-${cell}\nreplicas: ${replicas}", &vars()).unwrap(),
            "name: web-eu-1\nreplicas: 3"
        );
    }

    #[test]
    fn a_default_applies_only_when_the_variable_is_unset() {
        assert_eq!(substitute("${tier:=gold} ${cell:=other}", &vars()).unwrap(), "gold eu-1");
        assert_eq!(substitute("${empty:=fallback}", &vars()).unwrap(), "", "a set but empty value is a value");
        assert_eq!(substitute("${tier:=}", &vars()).unwrap(), "", "an empty default is a default");
        assert_eq!(substitute("${url:=http://x:8080/a}", &vars()).unwrap(), "http://x:8080/a");
    }

    #[test]
    fn a_doubled_dollar_escapes_a_reference() {
        assert_eq!(substitute("echo $${HOME} ${cell}", &vars()).unwrap(), "echo ${HOME} eu-1");
        assert_eq!(
            substitute("$$${cell}", &vars()).unwrap(),
            "$${cell}",
            "only a doubled dollar before a brace escapes"
        );
    }

    #[test]
    fn other_dollars_are_left_alone() {
        assert_eq!(
            substitute("cost: $5, $HOME, $$ and a trailing $", &vars()).unwrap(),
            "cost: $5, $HOME, $$ and a trailing $"
        );
    }

    #[test]
    fn unknown_variables_are_named_all_at_once() {
        let error = substitute("${region} ${cell} ${zone} ${region}", &vars()).unwrap_err();
        assert_eq!(error, SubstituteError::Missing(["region".to_string(), "zone".to_string()].into()));
    }

    #[test]
    fn what_is_not_a_reference_is_refused() {
        for text in ["${HOME:-x}", "${1abc}", "${}", "${a.b}", "${cell"] {
            assert!(matches!(substitute(text, &vars()), Err(SubstituteError::Syntax(_))), "{text}");
        }
    }
}
