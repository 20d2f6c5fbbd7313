//! The seam to Go templates for `line_format` and `label_format`.
//!
//! The full template language (`query/src/logql_template.rs`) is being
//! written on its own branch; until it lands this module renders only the
//! commonest actions — `{{.label}}`, `{{ .label }}`, `{{__line__}}` and
//! `{{__timestamp__}}` — and refuses anything else when the query is
//! compiled, so no query silently renders wrong. Plugging the real engine in
//! changes [`Template`] alone.

use tidewatch_model::Labels;

/// What a template sees for one entry.
#[derive(Debug)]
pub(crate) struct TemplateData<'a> {
    pub(crate) line: &'a str,
    /// Nanoseconds.
    pub(crate) timestamp: i64,
    pub(crate) labels: Labels,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Label(String),
    Line,
    Timestamp,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "template: unclosed action".to_string())?;
            let action = after[..close].trim();
            pieces.push(match action {
                "__line__" => Piece::Line,
                "__timestamp__" => Piece::Timestamp,
                field
                    if field.starts_with('.')
                        && field.len() > 1
                        && field[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Piece::Label(field[1..].to_string())
                }
                other => return Err(format!("template: unsupported action {{{{{other}}}}}")),
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    pub(crate) fn render(&self, data: &TemplateData<'_>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Label(name) => out.push_str(data.labels.get(name).unwrap_or("")),
                Piece::Line => out.push_str(data.line),
                Piece::Timestamp => {
                    let seconds = data.timestamp.div_euclid(1_000_000_000);
                    let nanos = data.timestamp.rem_euclid(1_000_000_000) as u32;
                    match chrono::DateTime::from_timestamp(seconds, nanos) {
                        Some(time) => out.push_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                        None => return Err("template: timestamp out of range".to_string()),
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_line_and_refuses_the_rest() {
        let template = Template::parse("{{.a}}-{{ .b }} [{{__line__}}]").unwrap();
        let data = TemplateData {
            line: "x",
            timestamp: 0,
            labels: Labels::from_pairs([("a", "1")]),
        };
        assert_eq!(template.render(&data).unwrap(), "1- [x]");
        assert!(Template::parse("{{ .a | upper }}").is_err());
        assert!(Template::parse("{{ .a ").is_err());
    }
}
