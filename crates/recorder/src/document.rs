//! The overview document and the changelog: their Markdown shape, and the checks an LLM's
//! answer must pass before it touches them.
//!
//! `overview.md` is a title, a `_Last updated: <RFC 3339>_` stamp (what `server_overview`
//! reports) and `## ` sections in a fixed order ([`SECTIONS`]; the model may add others, kept
//! before "Recent Changes"). "Recent Changes" is never written by the model: it is rebuilt from
//! the tail of `changelog.md`, whose lines are `YYYY-MM-DD HH:MM | <tool> | <effect>`.

use serde::Deserialize;

/// The sections of a new overview, in order.
pub const SECTIONS: [&str; 7] = [
    "TL;DR",
    "Installed Services",
    "Deployed Applications",
    "Network",
    "Data Locations",
    "Recent Changes",
    "Known Quirks",
];

/// The section rebuilt from the changelog.
pub const RECENT_CHANGES: &str = "Recent Changes";

/// Changelog lines shown under "Recent Changes".
pub const RECENT_LINES: usize = 20;

/// Longest section body accepted from the model, in bytes.
pub const MAX_SECTION_BYTES: usize = 16 * 1024;
/// Most sections an overview may have.
pub const MAX_SECTIONS: usize = 24;
/// Longest changelog line accepted from the model.
pub const MAX_CHANGELOG_LINE_BYTES: usize = 512;

/// `YYYY-MM-DDTHH:MM:SSZ` now: the `_Last updated_` stamp of a document written now.
pub fn now_rfc3339() -> String {
    let t = mymcp_audit::now_rfc3339();
    // Second precision is enough for a document stamp.
    format!("{}Z", &t[..19])
}

/// An overview: title line and sections in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    pub title: String,
    pub sections: Vec<(String, String)>,
}

/// One section the model rewrites.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionUpdate {
    pub section: String,
    pub content: String,
}

/// What a merge call must answer (the strict JSON schema of [`merge_schema`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeAnswer {
    pub new_changelog_lines: Vec<String>,
    pub section_updates: Vec<SectionUpdate>,
}

/// What the bootstrap's final tool call carries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAnswer {
    pub sections: Vec<SectionUpdate>,
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("the answer does not match the schema: {0}")]
    Schema(String),
    #[error("changelog line {0:?} is not `YYYY-MM-DD HH:MM | tool | effect`")]
    ChangelogLine(String),
    #[error("section {0:?}: {1}")]
    Section(String, &'static str),
}

/// The JSON schema of a merge answer (strict: every property required, nothing else).
pub fn merge_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "new_changelog_lines": {
                "type": "array",
                "description": "One line per change: `YYYY-MM-DD HH:MM | <tool> | <effect>` (UTC, the event's time).",
                "items": { "type": "string" }
            },
            "section_updates": {
                "type": "array",
                "description": "Sections whose content changes, with their complete new Markdown body (without the `## ` heading). Never \"Recent Changes\".",
                "items": {
                    "type": "object",
                    "properties": {
                        "section": { "type": "string" },
                        "content": { "type": "string" }
                    },
                    "required": ["section", "content"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["new_changelog_lines", "section_updates"],
        "additionalProperties": false
    })
}

/// The JSON schema of the bootstrap's final answer.
pub fn bootstrap_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "sections": {
                "type": "array",
                "description": "Every section of the overview with its Markdown body (without the `## ` heading).",
                "items": {
                    "type": "object",
                    "properties": {
                        "section": { "type": "string" },
                        "content": { "type": "string" }
                    },
                    "required": ["section", "content"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["sections"],
        "additionalProperties": false
    })
}

impl MergeAnswer {
    /// Parses and checks an answer: the schema, every changelog line's shape, every section's
    /// name and size.
    pub fn parse(value: &serde_json::Value) -> Result<MergeAnswer, AnswerError> {
        let a: MergeAnswer = serde_json::from_value(value.clone())
            .map_err(|e| AnswerError::Schema(e.to_string()))?;
        for l in &a.new_changelog_lines {
            check_changelog_line(l)?;
        }
        for u in &a.section_updates {
            check_section(u)?;
            if u.section.eq_ignore_ascii_case(RECENT_CHANGES) {
                return Err(AnswerError::Section(
                    u.section.clone(),
                    "is rebuilt from the changelog, not written",
                ));
            }
        }
        Ok(a)
    }
}

impl BootstrapAnswer {
    pub fn parse(value: &serde_json::Value) -> Result<BootstrapAnswer, AnswerError> {
        let a: BootstrapAnswer = serde_json::from_value(value.clone())
            .map_err(|e| AnswerError::Schema(e.to_string()))?;
        if a.sections.is_empty() {
            return Err(AnswerError::Schema("no sections".into()));
        }
        for u in &a.sections {
            check_section(u)?;
        }
        Ok(a)
    }
}

fn check_section(u: &SectionUpdate) -> Result<(), AnswerError> {
    let name = u.section.trim();
    if name.is_empty() || name.len() > 80 || name.contains('\n') || name.starts_with('#') {
        return Err(AnswerError::Section(
            u.section.clone(),
            "is not a section name",
        ));
    }
    if u.content.len() > MAX_SECTION_BYTES {
        return Err(AnswerError::Section(u.section.clone(), "is too long"));
    }
    if u.content
        .lines()
        .any(|l| l.starts_with("# ") || l.starts_with("## "))
    {
        return Err(AnswerError::Section(
            u.section.clone(),
            "contains a level-1 or level-2 heading",
        ));
    }
    Ok(())
}

/// Checks `YYYY-MM-DD HH:MM | tool | effect`.
pub fn check_changelog_line(l: &str) -> Result<(), AnswerError> {
    let bad = || AnswerError::ChangelogLine(l.chars().take(120).collect());
    if l.len() > MAX_CHANGELOG_LINE_BYTES || l.contains('\n') || l.contains('\r') {
        return Err(bad());
    }
    let mut parts = l.splitn(3, " | ");
    let (Some(when), Some(tool), Some(effect)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let b = when.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = b.len() == 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16);
    let tool_ok = !tool.is_empty()
        && tool.len() <= 64
        && tool
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if !shape || !tool_ok || effect.trim().is_empty() {
        return Err(bad());
    }
    Ok(())
}

impl Overview {
    /// A new overview with the given sections, in [`SECTIONS`] order (others after them,
    /// before "Recent Changes").
    pub fn new(title: &str, sections: &[SectionUpdate]) -> Overview {
        let mut o = Overview {
            title: title.to_owned(),
            sections: SECTIONS
                .iter()
                .map(|s| (s.to_string(), String::new()))
                .collect(),
        };
        o.apply(sections);
        o
    }

    /// Parses an overview written by [`Overview::render`] (or by hand): the first `# ` line is
    /// the title, `## ` lines start sections, the stamp line is dropped (it is rewritten).
    pub fn parse(text: &str) -> Overview {
        let mut title = String::new();
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("## ") {
                sections.push((name.trim().to_owned(), String::new()));
            } else if let Some(t) = line.strip_prefix("# ").filter(|_| sections.is_empty()) {
                title = t.trim().to_owned();
            } else if let Some((_, body)) = sections.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        for (_, body) in &mut sections {
            *body = body.trim().to_owned();
        }
        Overview { title, sections }
    }

    /// Replaces the named sections' bodies (matching names case-insensitively); a new name is
    /// added before "Recent Changes".
    pub fn apply(&mut self, updates: &[SectionUpdate]) {
        for u in updates {
            let name = u.section.trim();
            let body = u.content.trim().to_owned();
            if let Some((_, b)) = self
                .sections
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                *b = body;
                continue;
            }
            if self.sections.len() >= MAX_SECTIONS {
                continue;
            }
            let at = self
                .sections
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(RECENT_CHANGES))
                .unwrap_or(self.sections.len());
            self.sections.insert(at, (name.to_owned(), body));
        }
    }

    /// Sets "Recent Changes" to the last [`RECENT_LINES`] changelog lines, newest first.
    pub fn set_recent_changes(&mut self, changelog: &str) {
        let lines: Vec<&str> = changelog
            .lines()
            .filter(|l| check_changelog_line(l).is_ok())
            .collect();
        let body = lines
            .iter()
            .rev()
            .take(RECENT_LINES)
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        let body = if body.is_empty() {
            "_No changes recorded yet._".to_owned()
        } else {
            body
        };
        match self
            .sections
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(RECENT_CHANGES))
        {
            Some((_, b)) => *b = body,
            None => self.sections.push((RECENT_CHANGES.to_owned(), body)),
        }
    }

    /// The Markdown text, stamped with `updated` (RFC 3339).
    pub fn render(&self, updated: &str) -> String {
        let mut out = format!("# {}\n\n_Last updated: {updated}_\n", self.title);
        for (name, body) in &self.sections {
            out.push_str(&format!("\n## {name}\n\n"));
            if body.is_empty() {
                out.push_str("_Nothing known yet._\n");
            } else {
                out.push_str(body);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_are_second_precision_utc() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z'));
    }

    fn upd(section: &str, content: &str) -> SectionUpdate {
        SectionUpdate {
            section: section.into(),
            content: content.into(),
        }
    }

    #[test]
    fn render_parse_round_trip_and_updates_keep_the_order() {
        let mut o = Overview::new(
            "Host overview: web1",
            &[
                upd("TL;DR", "A web server."),
                upd("Network", "- :443 nginx"),
            ],
        );
        o.apply(&[
            upd("network", "- :443 nginx\n- :5432 postgres"),
            upd("Backups", "none"),
        ]);
        o.set_recent_changes("2026-11-21 18:00 | write_file | /etc/x\nnot a line\n");
        let text = o.render("2026-11-21T18:15:33Z");
        assert!(text.starts_with("# Host overview: web1\n\n_Last updated: 2026-11-21T18:15:33Z_\n"));
        let back = Overview::parse(&text);
        assert_eq!(back, o.clone_with_placeholders());
        let names: Vec<&str> = back.sections.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "TL;DR",
                "Installed Services",
                "Deployed Applications",
                "Network",
                "Data Locations",
                "Backups",
                "Recent Changes",
                "Known Quirks"
            ]
        );
        assert_eq!(back.sections[3].1, "- :443 nginx\n- :5432 postgres");
        assert_eq!(
            back.sections[6].1,
            "- 2026-11-21 18:00 | write_file | /etc/x"
        );
    }

    impl Overview {
        /// What parsing a rendered overview gives: empty sections carry their placeholder.
        fn clone_with_placeholders(&self) -> Overview {
            let mut o = self.clone();
            for (_, b) in &mut o.sections {
                if b.is_empty() {
                    *b = "_Nothing known yet._".into();
                }
            }
            o
        }
    }

    #[test]
    fn recent_changes_are_the_newest_lines_first() {
        let log: String = (0..30)
            .map(|i| format!("2026-11-21 18:{i:02} | bash_execute | step {i}\n"))
            .collect();
        let mut o = Overview::new("h", &[]);
        o.set_recent_changes(&log);
        let body = &o.sections[5].1;
        assert_eq!(body.lines().count(), RECENT_LINES);
        assert!(body.starts_with("- 2026-11-21 18:29 | bash_execute | step 29"));
    }

    #[test]
    fn answers_are_checked_strictly() {
        let ok = json!({"new_changelog_lines": ["2026-11-21 18:00 | write_file | wrote /etc/x"],
                        "section_updates": [{"section": "Network", "content": "x"}]});
        assert!(MergeAnswer::parse(&ok).is_ok());
        for bad in [
            json!({"new_changelog_lines": []}),
            json!({"new_changelog_lines": [], "section_updates": [], "extra": 1}),
            json!({"new_changelog_lines": ["yesterday | x | y"], "section_updates": []}),
            json!({"new_changelog_lines": ["2026-11-21 18:00 | write file | y"], "section_updates": []}),
            json!({"new_changelog_lines": ["2026-11-21 18:00 | t | "], "section_updates": []}),
            json!({"new_changelog_lines": [], "section_updates": [{"section": "Recent Changes", "content": "x"}]}),
            json!({"new_changelog_lines": [], "section_updates": [{"section": "X", "content": "## Y\nz"}]}),
            json!({"new_changelog_lines": [], "section_updates": [{"section": "", "content": "z"}]}),
            json!({"new_changelog_lines": [], "section_updates": [{"section": "X", "content": "z".repeat(MAX_SECTION_BYTES + 1)}]}),
        ] {
            assert!(MergeAnswer::parse(&bad).is_err(), "{bad}");
        }
        assert!(BootstrapAnswer::parse(&json!({"sections": []})).is_err());
        assert!(BootstrapAnswer::parse(
            &json!({"sections": [{"section": "TL;DR", "content": "x"}]})
        )
        .is_ok());
    }
}
