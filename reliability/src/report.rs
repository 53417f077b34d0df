//! Figures and the table they print as.

use std::fmt::Write as _;

/// One campaign's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The campaign.
    pub campaign: String,
    /// (figure, value, must be zero).
    pub rows: Vec<(String, u64, bool)>,
    /// Free-text notes shown under the campaign.
    pub notes: Vec<String>,
}

impl Figures {
    /// No figures yet.
    pub fn new(campaign: &str) -> Self {
        Self { campaign: campaign.into(), rows: Vec::new(), notes: Vec::new() }
    }

    /// A figure that describes what ran.
    pub fn info(&mut self, name: &str, value: u64) {
        self.rows.push((name.into(), value, false));
    }

    /// A figure that must be zero.
    pub fn zero(&mut self, name: &str, value: u64) {
        self.rows.push((name.into(), value, true));
    }

    /// A note.
    pub fn note(&mut self, text: &str) {
        self.notes.push(text.into());
    }

    /// Figures that must be zero and are not.
    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|(_, value, must_be_zero)| *must_be_zero && *value > 0)
            .map(|(name, value, _)| format!("{}: {} = {value}", self.campaign, name.trim()))
            .collect()
    }
}

/// The markdown table of every campaign's figures.
pub fn table(all: &[Figures], header: &str) -> String {
    let mut out = format!("{header}\n\n| campaign | figure | value |\n|---|---|---:|\n");
    for figures in all {
        let mut first = true;
        for (name, value, must_be_zero) in &figures.rows {
            let campaign = if first { figures.campaign.as_str() } else { "" };
            first = false;
            let shown =
                if *must_be_zero { format!("{value} (must be 0)") } else { value.to_string() };
            let _ = writeln!(out, "| {campaign} | {name} | {shown} |");
        }
        for note in &figures.notes {
            let _ = writeln!(out, "| | *{note}* | |");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_the_nonzero_must_be_zero_figures() {
        let mut f = Figures::new("c");
        f.info("explored", 10);
        f.zero("lost", 0);
        f.zero("panics", 2);
        assert_eq!(f.failures(), vec!["c: panics = 2".to_string()]);
        let t = table(&[f], "# t");
        assert!(t.contains("| c | explored | 10 |"));
        assert!(t.contains("|  | panics | 2 (must be 0) |"), "{t}");
    }
}
