//! The seam between the pipeline and the Go template engine
//! ([`crate::logql_template`]) for `line_format` and `label_format`.
//!
//! Kept as one small adapter so the pipeline speaks in its own terms (an
//! entry's labels, line and time) and the engine's API stays its own.

use tidewatch_model::Labels;

use crate::logql_template::{self, LabelLookup, TemplateContext};

/// What a template sees for one entry.
#[derive(Debug)]
pub(crate) struct TemplateData<'a> {
    pub(crate) line: &'a str,
    /// Nanoseconds.
    pub(crate) timestamp: i64,
    pub(crate) labels: Labels,
    /// What `now` returns: the query's evaluation time (ns), the same for every line.
    pub(crate) now: i64,
}

/// The entry's labels as the template's data (Loki's label map).
struct EntryLabels<'a>(&'a Labels);

impl LabelLookup for EntryLabels<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for label in self.0 {
            f(&label.name, &label.value);
        }
    }
}

/// A parsed template.
#[derive(Debug)]
pub(crate) struct Template(logql_template::Template);

impl Template {
    /// A `line_format` template (Go names it `line` in its messages).
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        logql_template::Template::parse(text)
            .map(Template)
            .map_err(|e| e.to_string())
    }

    /// A `label_format` template (Go names it `label`).
    pub(crate) fn parse_label(text: &str) -> Result<Template, String> {
        logql_template::Template::parse_named("label", text)
            .map(Template)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn render(&self, data: &TemplateData<'_>) -> Result<String, String> {
        let labels = EntryLabels(&data.labels);
        let context = TemplateContext::new(&labels, data.line, data.timestamp, data.now);
        self.0.render(&context).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_line_and_functions() {
        let template = Template::parse(r#"{{.a}}-{{ .b }} [{{__line__}}] {{ .a | printf "%03s" }}"#).unwrap();
        let data = TemplateData {
            line: "x",
            timestamp: 0,
            labels: Labels::from_pairs([("a", "1")]),
            now: 0,
        };
        assert_eq!(template.render(&data).unwrap(), "1- [x] 001");
        assert!(Template::parse("{{ .a ").is_err());
        assert!(Template::parse_label("{{ nope .a }}").unwrap_err().contains("label"));
    }
}
