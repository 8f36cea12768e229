//! The apiserver's string formats (k8s.io/apimachinery `util/validation`): each check
//! returns the messages the apiserver would give, empty when the value is valid.

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const WILDCARD_FMT: &str = "\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const KEY_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

const SUBDOMAIN_MAX: usize = 253;
const LABEL_MAX: usize = 63;

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// The apiserver's wording of a failed pattern, with its examples.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let shown: String =
        examples.iter().enumerate().map(|(i, e)| format!("{}'{e}', ", if i > 0 { " or " } else { "" })).collect();
    if shown.is_empty() {
        format!("{msg} (regex used for validation is '{fmt}')")
    } else {
        format!("{msg} (e.g. {shown}regex used for validation is '{fmt}')")
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_label(s: &str) -> bool {
    s.starts_with(is_lower_alnum) && s.ends_with(is_lower_alnum) && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

fn matches_subdomain(s: &str) -> bool {
    s.split('.').all(matches_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_key_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

fn length_then_pattern(value: &str, max: usize, ok: bool, pattern_error: impl FnOnce() -> String) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > max {
        errs.push(max_len(max));
    }
    if !ok {
        errs.push(pattern_error());
    }
    errs
}

pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    length_then_pattern(value, SUBDOMAIN_MAX, matches_subdomain(value), || {
        regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            SUBDOMAIN_FMT,
            &["example.com"],
        )
    })
}

pub fn dns1123_label(value: &str) -> Vec<String> {
    length_then_pattern(value, LABEL_MAX, matches_label(value), || {
        if matches_subdomain(value) {
            "must not contain dots".into()
        } else {
            regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                LABEL_FMT,
                &["my-name", "123-abc"],
            )
        }
    })
}

pub fn dns1035_label(value: &str) -> Vec<String> {
    let ok = matches_label(value) && value.starts_with(|c: char| c.is_ascii_lowercase());
    length_then_pattern(value, LABEL_MAX, ok, || {
        regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_FMT,
            &["my-name", "abc-123"],
        )
    })
}

/// `*.example.com`: a wildcard only as the whole first label.
pub fn wildcard_dns1123_subdomain(value: &str) -> Vec<String> {
    let ok = value.strip_prefix("*.").is_some_and(matches_subdomain);
    length_then_pattern(value, SUBDOMAIN_MAX, ok, || {
        regex_error(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
            WILDCARD_FMT,
            &["*.example.com"],
        )
    })
}

/// A qualified name (label key, annotation key, finalizer): `[prefix/]name`.
pub fn qualified_name(value: &str) -> Vec<String> {
    let key_error = || {
        regex_error(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            KEY_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        )
    };
    let mut errs = Vec::new();
    let name = match value.split('/').collect::<Vec<_>>().as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                key_error()
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > LABEL_MAX {
        errs.push(format!("name part {}", max_len(LABEL_MAX)));
    }
    if !matches_key_name(name) {
        errs.push(format!("name part {}", key_error()));
    }
    errs
}

pub fn label_value(value: &str) -> Vec<String> {
    let ok = value.is_empty() || matches_key_name(value);
    length_then_pattern(value, LABEL_MAX, ok, || {
        regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        )
    })
}

/// A key of a ConfigMap's or Secret's data.
pub fn config_map_key(value: &str) -> Vec<String> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let mut errs = length_then_pattern(value, SUBDOMAIN_MAX, ok, || {
        regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        )
    });
    match value {
        "." => errs.push("must not be '.'".into()),
        ".." => errs.push("must not be '..'".into()),
        v if v.starts_with("..") => errs.push("must not start with '..'".into()),
        _ => {}
    }
    errs
}

/// A name that can be one segment of a URL path (what every object name must be).
pub fn path_segment_name(value: &str) -> Vec<String> {
    match value {
        "." | ".." => vec![format!("may not be '{value}'")],
        _ => ["/", "%"].iter().filter(|s| value.contains(*s)).map(|s| format!("may not contain '{s}'")).collect(),
    }
}

pub fn port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len(15));
    }
    if port.is_empty() || !port.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

pub fn port_number(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) { Vec::new() } else { vec!["must be between 1 and 65535, inclusive".into()] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_labels_and_wildcards() {
        assert!(dns1123_subdomain("a.b-c.d1").is_empty());
        assert_eq!(dns1123_subdomain("Bad_Name").len(), 1);
        assert_eq!(dns1123_subdomain(&"a".repeat(254)), vec![max_len(253)]);
        assert_eq!(dns1123_label("a.b"), vec!["must not contain dots".to_string()]);
        assert!(dns1123_label("tenant-1").is_empty());
        assert!(dns1035_label("svc-1").is_empty());
        assert_eq!(dns1035_label("1svc").len(), 1);
        assert!(wildcard_dns1123_subdomain("*.example.com").is_empty());
        assert_eq!(wildcard_dns1123_subdomain("a.*.com").len(), 1);
        assert_eq!(wildcard_dns1123_subdomain("*").len(), 1);
    }

    #[test]
    fn messages_read_as_the_apiserver_writes_them() {
        assert_eq!(
            dns1035_label("1svc")[0],
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        );
        assert_eq!(
            qualified_name("bad controller!")[0],
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
    }

    #[test]
    fn qualified_names_keys_and_ports() {
        assert!(qualified_name("cellplane.io/teardown").is_empty());
        assert_eq!(qualified_name("/x"), vec!["prefix part must be non-empty".to_string()]);
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(label_value("").is_empty());
        assert_eq!(label_value("-x").len(), 1);
        assert!(config_map_key("tls.crt").is_empty());
        assert_eq!(config_map_key("bad key!").len(), 1);
        assert_eq!(config_map_key("..x"), vec!["must not start with '..'".to_string()]);
        assert!(port_name("http").is_empty());
        assert_eq!(port_name("HTTP--x").len(), 2);
        assert_eq!(port_number(70000).len(), 1);
        assert_eq!(path_segment_name("a/b"), vec!["may not contain '/'".to_string()]);
    }
}
