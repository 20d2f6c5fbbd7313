//! Prometheus text format: arbitrary bytes never panic the parser, and
//! whatever it accepts renders back to text that parses to the same series.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::exposition::{format_openmetrics_float, parse_text, render_text};
use tidewatch_model::labels::Labels;
use tidewatch_model::seam::{SeriesSamples, WriteBatch};

fuzz_target!(|data: &[u8]| {
    let Ok(scrape) = parse_text(data, 1_000) else {
        return;
    };
    // Negative timestamps cannot be written in the text format.
    if scrape.series.iter().flat_map(|s| &s.samples).any(|s| s.timestamp < 0) {
        return;
    }
    let text = render_text(&scrape.series, &scrape.metadata);
    let again =
        parse_text(text.as_bytes(), 1_000).unwrap_or_else(|e| panic!("rendered scrape does not parse: {e}\n{text}"));
    tidewatch_fuzz::assert_same_series(&comparable(scrape.series), &comparable(again.series));
});

/// Prometheus normalises `le`/`quantile` by the most recent `# TYPE` line,
/// and rendering moves each `# TYPE` before its family's samples, so the
/// spelling of those two values may change; compare them normalised. The
/// renderer also brings a family's series together, so lines of one series
/// that were apart come back as one entry: merge them (in order) first.
fn comparable(series: Vec<SeriesSamples>) -> WriteBatch {
    let mut normalised: Vec<SeriesSamples> = series
        .into_iter()
        .map(|mut one| {
            one.labels = Labels::from_pairs(one.labels.iter().map(|l| {
                let value = match l.value.parse::<f64>() {
                    Ok(number) if l.name == "le" || l.name == "quantile" => format_openmetrics_float(number),
                    _ => l.value.clone(),
                };
                (l.name.clone(), value)
            }));
            one
        })
        .collect();
    normalised.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut merged: Vec<SeriesSamples> = Vec::with_capacity(normalised.len());
    for one in normalised {
        match merged.last_mut() {
            Some(last) if last.labels == one.labels => last.samples.extend(one.samples),
            _ => merged.push(one),
        }
    }
    WriteBatch {
        series: merged,
        metadata: Vec::new(),
    }
}
