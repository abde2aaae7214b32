//! Usage charts, pure: a history (`status.usage`) turned into the last 31 days and the last 12 months,
//! drawn as SVG bar charts built on the server, with the numbers beside in a table. No script and no
//! inline style (the CSP forbids both): bars carry classes the stylesheet colours, and a `<title>`
//! each, which browsers show on hover.

use std::fmt::Write as _;

use k8s_openapi::jiff::civil::Date;
use tollgate_crds::{Usage, UsageBucket};

use super::html::esc;
use crate::usage::history::{Amount, Month, day_key, dollars};

/// Days shown.
pub const DAYS: usize = 31;
/// Months shown.
pub const MONTHS: usize = 12;

/// One period's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// `2026-12-06` or `2026-12`.
    pub period: String,
    /// The amounts (zero when nothing was counted).
    pub amount: Amount,
}

/// The `n` days ending `today`, oldest first, days without traffic at zero.
pub fn last_days(usage: Option<&Usage>, today: Date, n: usize) -> Vec<Row> {
    let mut rows = Vec::with_capacity(n);
    let mut day = today;
    for _ in 0..n {
        rows.push(row(usage.map(|u| u.days.as_slice()), day_key(day)));
        match day.yesterday() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    rows.reverse();
    rows
}

/// The `n` months ending with `today`'s, oldest first.
pub fn last_months(usage: Option<&Usage>, today: Date, n: usize) -> Vec<Row> {
    let this = Month::of(today);
    (0..n)
        .rev()
        .map(|back| {
            row(
                usage.map(|u| u.months.as_slice()),
                this.back(i32::try_from(back).unwrap_or(0)).key(),
            )
        })
        .collect()
}

fn row(buckets: Option<&[UsageBucket]>, period: String) -> Row {
    let amount = buckets
        .and_then(|b| b.iter().find(|b| b.period == period))
        .map(Amount::of)
        .unwrap_or_default();
    Row { period, amount }
}

/// What a chart shows of a row.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    /// Calls answered.
    Requests,
    /// Input plus output tokens.
    Tokens,
    /// Cost in US dollars.
    Cost,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Self::Requests => "Requests",
            Self::Tokens => "Tokens",
            Self::Cost => "Cost (USD)",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Cost => "cost",
        }
    }

    /// The value drawn, and how it is written.
    fn of(self, a: &Amount) -> (f64, String) {
        match self {
            Self::Requests => (a.requests as f64, a.requests.to_string()),
            Self::Tokens => {
                let t = a.input_tokens.saturating_add(a.output_tokens);
                (t as f64, t.to_string())
            }
            Self::Cost => (
                a.cost_micros as f64 / 1e6,
                format!("${}", dollars(a.cost_micros)),
            ),
        }
    }
}

const WIDTH: usize = 620;
const HEIGHT: usize = 150;
const LEFT: usize = 70;
const BOTTOM: usize = 22;
const TOP: usize = 10;

/// One bar chart of `measure` over `rows`, labelled every `label_every` bars (and the last).
pub fn svg(rows: &[Row], measure: Measure, caption: &str, label_every: usize) -> String {
    let values: Vec<(f64, String)> = rows.iter().map(|r| measure.of(&r.amount)).collect();
    let max = values.iter().map(|(v, _)| *v).fold(0.0_f64, f64::max);
    let top_label = match measure {
        // Small costs keep their digits: `$0.000136`, not `$0.00`.
        Measure::Cost if max < 0.01 => format!("${max:.6}"),
        Measure::Cost => format!("${max:.2}"),
        _ => format!("{max:.0}"),
    };
    let scale = if max > 0.0 { max } else { 1.0 };
    let plot_w = WIDTH - LEFT - 4;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w as f64 / rows.len().max(1) as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let mut out = format!(
        "<svg class=\"chart chart-{class}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{label}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{label}</title>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\"/>\
         <line class=\"grid\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{right}\" y2=\"{TOP}\"/>\
         <text class=\"tick\" x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{top}</text>\
         <text class=\"tick\" x=\"{tx}\" y=\"{base}\" text-anchor=\"end\">0</text>",
        class = measure.class(),
        label = esc(&format!("{}, {caption}", measure.name())),
        base = HEIGHT - BOTTOM,
        right = WIDTH - 4,
        tx = LEFT - 6,
        ty = TOP + 4,
        top = esc(&top_label),
    );
    for (i, (row, (value, written))) in rows.iter().zip(&values).enumerate() {
        let h = (value / scale * plot_h as f64).round();
        let x = LEFT as f64 + i as f64 * slot + (slot - bar_w) / 2.0;
        let y = (HEIGHT - BOTTOM) as f64 - h;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\">\
             <title>{}: {}</title></rect>",
            esc(&row.period),
            esc(written)
        );
        if i % label_every.max(1) == 0 || i + 1 == rows.len() {
            let _ = write!(
                out,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar_w / 2.0,
                HEIGHT - 6,
                esc(short(&row.period))
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A period as an axis label: the day of a date (`06`), the month of a month (`2026-12` → `12/26`
/// would be ambiguous, so `2026-12` stays).
fn short(period: &str) -> &str {
    if period.len() == 10 {
        &period[8..]
    } else {
        period
    }
}

/// The numbers of `rows`, newest first, as a table.
pub fn table(rows: &[Row], period: &str) -> String {
    let mut out = format!(
        "<table class=\"usage-numbers\"><thead><tr><th>{}</th><th>Requests</th><th>Input tokens</th>\
         <th>Output tokens</th><th>Cost (USD)</th></tr></thead><tbody>",
        esc(period)
    );
    for r in rows.iter().rev() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.period),
            r.amount.requests,
            r.amount.input_tokens,
            r.amount.output_tokens,
            dollars(r.amount.cost_micros)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The whole history section of a page: the days and the months, three charts each, numbers beside.
pub fn section(usage: Option<&Usage>, today: Date) -> String {
    let days = last_days(usage, today, DAYS);
    let months = last_months(usage, today, MONTHS);
    let mut out = String::new();
    for (title, rows, caption, every, period) in [
        (
            "Last 31 days",
            &days,
            "per day, last 31 days (UTC)",
            5,
            "Day",
        ),
        (
            "Last 12 months",
            &months,
            "per month, last 12 months (UTC)",
            1,
            "Month",
        ),
    ] {
        let _ = write!(
            out,
            "<h2>{title}</h2><div class=\"usage\"><div class=\"charts\">"
        );
        for measure in [Measure::Requests, Measure::Tokens, Measure::Cost] {
            let _ = write!(
                out,
                "<figure><figcaption>{}</figcaption>{}</figure>",
                measure.name(),
                svg(rows, measure, caption, every)
            );
        }
        let _ = write!(out, "</div>{}</div>", table(rows, period));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::history;

    fn calls(n: u64) -> Amount {
        Amount {
            requests: n,
            input_tokens: 10 * n,
            output_tokens: 2 * n,
            cost_micros: 1_500_000 * n as i64,
        }
    }

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn the_last_31_days_and_12_months_are_filled_with_zeros() {
        let today = day("2026-03-02");
        let usage = history::add(
            None,
            &[(day("2026-02-27"), calls(2)), (today, calls(3))],
            "c-0",
            1,
            today,
        );
        let days = last_days(Some(&usage), today, DAYS);
        assert_eq!(days.len(), 31);
        assert_eq!(days[0].period, "2026-01-31");
        assert_eq!(days[30].period, "2026-03-02");
        assert_eq!(days[30].amount.requests, 3);
        assert_eq!(days[27].period, "2026-02-27");
        assert_eq!(days[27].amount.requests, 2);
        assert_eq!(days.iter().map(|r| r.amount.requests).sum::<u64>(), 5);
        let months = last_months(Some(&usage), today, MONTHS);
        assert_eq!(months.len(), 12);
        assert_eq!(months[0].period, "2025-04");
        assert_eq!(months[10].amount.requests, 2);
        assert_eq!(months[11].amount.requests, 3);
        assert_eq!(last_days(None, today, 3).len(), 3);
    }

    #[test]
    fn bars_are_scaled_to_the_largest_and_carry_their_numbers() {
        let rows = vec![
            Row {
                period: "2026-03-01".into(),
                amount: calls(1),
            },
            Row {
                period: "2026-03-02".into(),
                amount: calls(4),
            },
        ];
        let svg = svg(&rows, Measure::Requests, "per day", 5);
        assert!(svg.starts_with("<svg class=\"chart chart-requests\""));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        let plot_h = (HEIGHT - TOP - BOTTOM) as f64;
        assert!(svg.contains(&format!("height=\"{plot_h:.1}\"")), "{svg}");
        assert!(svg.contains(&format!("height=\"{:.1}\"", (plot_h / 4.0).round())));
        assert!(svg.contains("<title>2026-03-02: 4</title>"));
        assert!(!svg.contains("style="), "the CSP forbids inline style");
        let cost = super::svg(&rows, Measure::Cost, "per day", 5);
        assert!(
            cost.contains("<title>2026-03-02: $6.000000</title>"),
            "{cost}"
        );
        let table = table(&rows, "Day");
        assert!(table.find("2026-03-02").unwrap() < table.find("2026-03-01").unwrap());
        assert!(table.contains("<td>4</td><td>40</td><td>8</td><td>6.000000</td>"));
    }

    #[test]
    fn an_empty_history_draws_flat_charts() {
        let section = section(None, day("2026-03-02"));
        assert_eq!(section.matches("<svg").count(), 6);
        assert!(section.contains("height=\"0.0\""));
        assert!(!section.contains("NaN"));
    }
}
