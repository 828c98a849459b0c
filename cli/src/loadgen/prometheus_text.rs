//! Just enough of the Prometheus text format to read one histogram from a /metrics page.

use std::collections::BTreeMap;

use anyhow::Context;

pub use tributary_processor::observe::END_TO_END as END_TO_END_METRIC;

/// Sample name with labels -> value.
pub type Samples = BTreeMap<String, f64>;

pub async fn scrape(url: &str) -> anyhow::Result<Samples> {
    let text = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .context("reading metrics")?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A cumulative histogram: (upper bound, count) ascending, plus the total count.
pub struct Buckets {
    pub bounds: Vec<(f64, f64)>,
    pub count: f64,
}

impl Buckets {
    /// The upper bound of the bucket holding quantile `q`.
    pub fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.count;
        self.bounds
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(bound, _)| *bound)
            .unwrap_or(f64::INFINITY)
    }
}

/// The histogram `metric` summed over its label sets, `after` minus `before`.
pub fn histogram_delta(before: &Samples, after: &Samples, metric: &str) -> Option<Buckets> {
    let bucket_prefix = format!("{metric}_bucket{{");
    let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (name, value) in after {
        let Some(labels) = name.strip_prefix(&bucket_prefix) else {
            continue;
        };
        let le = labels.split("le=\"").nth(1)?.split('"').next()?;
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let delta = value - before.get(name).copied().unwrap_or(0.0);
        let entry = by_bound.entry(bound.to_bits()).or_insert((bound, 0.0));
        entry.1 += delta;
    }
    let mut bounds: Vec<(f64, f64)> = by_bound.into_values().collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = bounds.last().map(|(_, c)| *c).unwrap_or(0.0);
    (count > 0.0).then_some(Buckets { bounds, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_bucket_deltas() {
        let before =
            parse("x_bucket{le=\"0.01\"} 1\nx_bucket{le=\"0.1\"} 1\nx_bucket{le=\"+Inf\"} 1\n");
        let after = parse(
            "# TYPE x histogram\nx_bucket{le=\"0.01\"} 91\nx_bucket{le=\"0.1\"} 100\nx_bucket{le=\"+Inf\"} 101\n",
        );
        let h = histogram_delta(&before, &after, "x").expect("samples");
        assert_eq!(h.count, 100.0);
        assert_eq!(h.quantile(0.5), 0.01);
        assert_eq!(h.quantile(0.99), 0.1);
        assert!(histogram_delta(&after, &after, "x").is_none());
    }
}
