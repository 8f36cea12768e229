//! HTML building: escaping, the page layout and the small pieces every page uses. Plain
//! string building with one escaping helper: the pages are small, and a template crate would
//! cost more compile time than it saves.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{Condition, ConditionStatus};

/// Text made safe for HTML content and attribute values (double-quoted).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string or path component, percent-encoded.
pub fn url(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What the layout needs besides the page itself.
pub struct Chrome<'a> {
    pub title: &'a str,
    pub user: Option<&'a str>,
    pub csrf: &'a str,
    /// The nav entry to mark as current (its path).
    pub current: &'a str,
    /// Shown on every page when the console serves a self-signed certificate.
    pub self_signed: bool,
    /// A one-shot message from the last action: (is an error, text).
    pub flash: Option<(bool, String)>,
}

const NAV: &[(&str, &str)] =
    &[("/namespaces", "Namespaces"), ("/cells", "Cells"), ("/rings", "Rings"), ("/workflows", "Workflows")];

/// A whole page: header with navigation and user, flash message, then `body`.
pub fn layout(chrome: &Chrome<'_>, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let current = if chrome.current.starts_with(path) { r#" aria-current="page""# } else { "" };
        let _ = write!(nav, r#"<li><a href="{path}"{current}>{label}</a></li>"#);
    }
    let user = match chrome.user {
        Some(user) => format!(
            r#"<form method="post" action="/logout" class="user"><span>Signed in as <strong>{}</strong></span>{}<button type="submit">Sign out</button></form>"#,
            esc(user),
            csrf_field(chrome.csrf)
        ),
        None => String::new(),
    };
    let warning = if chrome.self_signed {
        r#"<p class="banner warn" role="note">This console serves a <strong>self-signed certificate</strong>: browsers cannot verify it. Give it a certificate (--console-tls-cert, --console-tls-key) before anyone else uses it.</p>"#
    } else {
        ""
    };
    let flash = match &chrome.flash {
        Some((true, text)) => format!(r#"<p class="banner error" role="alert">{}</p>"#, esc(text)),
        Some((false, text)) => format!(r#"<p class="banner ok" role="status">{}</p>"#, esc(text)),
        None => String::new(),
    };
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · cellplane</title><link rel="stylesheet" href="/assets/console.css"><script src="/assets/console.js" defer></script></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/">cellplane</a><nav aria-label="Main"><ul>{nav}</ul></nav>{user}</header>
{warning}<main id="main" tabindex="-1"><h1>{title}</h1>{flash}{body}</main></body></html>"##,
        csrf = esc(chrome.csrf),
        title = esc(chrome.title),
    )
}

/// The hidden form field that carries the CSRF token.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="_csrf" value="{}">"#, esc(csrf))
}

/// A form of one button that POSTs to `action` with the CSRF token and `fields`.
pub fn button_form(action: &str, csrf: &str, fields: &[(&str, &str)], label: &str, class: &str) -> String {
    let mut hidden = csrf_field(csrf);
    for (name, value) in fields {
        let _ = write!(hidden, r#"<input type="hidden" name="{}" value="{}">"#, esc(name), esc(value));
    }
    format!(
        r#"<form method="post" action="{}" class="inline">{hidden}<button type="submit" class="{class}">{}</button></form>"#,
        esc(action),
        esc(label)
    )
}

/// A region the browser refreshes when the server-sent events at `source` say it changed.
pub fn live_region(source: &str, body: &str) -> String {
    format!(r#"<div id="live" data-live="{}" aria-live="polite">{body}</div>"#, esc(source))
}

/// A condition status as a badge: True green, False red, Unknown grey.
pub fn status_badge(status: Option<ConditionStatus>) -> String {
    let (class, text) = match status {
        Some(ConditionStatus::True) => ("ok", "True"),
        Some(ConditionStatus::False) => ("bad", "False"),
        Some(ConditionStatus::Unknown) => ("wait", "Unknown"),
        None => ("wait", "-"),
    };
    format!(r#"<span class="badge {class}">{text}</span>"#)
}

/// A phase as a badge, coloured by what it means for a person.
pub fn phase_badge(phase: Option<&str>) -> String {
    let phase = phase.unwrap_or("Pending");
    let class = match phase {
        "Ready" | "Baked" | "Completed" => "ok",
        "Failed" | "Halted" | "Degraded" | "NonDeterministic" | "RollingBack" => "bad",
        _ => "wait",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(phase))
}

/// A table of conditions: type, status, reason, message, since.
pub fn conditions_table(conditions: &[Condition]) -> String {
    let mut rows = String::new();
    for c in conditions {
        let _ = write!(
            rows,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.type_),
            status_badge(Some(c.status)),
            esc(&c.reason),
            esc(&c.message),
            time_ago(Some(&c.last_transition_time))
        );
    }
    format!(
        "<table><caption>Conditions</caption><thead><tr><th scope=\"col\">Type</th><th scope=\"col\">Status</th><th scope=\"col\">Reason</th><th scope=\"col\">Message</th><th scope=\"col\">Since</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// How long ago, as kubectl's AGE column says it, in a `<time>` element.
pub fn time_ago(time: Option<&Time>) -> String {
    match time {
        Some(Time(at)) => {
            let secs = (Timestamp::now().as_second() - at.as_second()).max(0);
            format!(r#"<time datetime="{at}" title="{at}">{}</time>"#, age(secs))
        }
        None => "-".into(),
    }
}

/// Epoch milliseconds as a `<time>` element showing how long ago (or, in the future, in how long).
pub fn ms_time(ms: i64) -> String {
    let at = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let delta = at.as_second() - Timestamp::now().as_second();
    let text = if delta > 0 { format!("in {}", age(delta)) } else { format!("{} ago", age(-delta)) };
    format!(r#"<time datetime="{at}" title="{at}">{text}</time>"#)
}

/// A duration in seconds in the style of kubectl's AGE column: 42s, 5m, 3h, 2d.
pub fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `<option>`s for a select, with `selected` marked.
pub fn options(values: &[&str], selected: &str) -> String {
    values
        .iter()
        .map(|v| {
            let mark = if *v == selected { " selected" } else { "" };
            let label = if v.is_empty() { "any".to_string() } else { esc(v) };
            format!(r#"<option value="{}"{mark}>{label}</option>"#, esc(v))
        })
        .collect()
}

/// A paragraph saying there is nothing to show.
pub fn empty(text: &str) -> String {
    format!(r#"<p class="empty">{}</p>"#, esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!([age(5), age(300), age(10_000), age(200_000)], ["5s", "5m", "2h", "2d"]);
    }
}
