//! Everything a person sees: colour choice (--color, NO_COLOR), verbosity, miette diagnostics, and
//! plain status lines on stderr. Owns no logic about clusters.

pub mod progress;

pub use progress::{ProgressMode, plain_line, render_plain, render_progress};

use clap::ValueEnum;
use std::io::IsTerminal;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub struct Output {
    pub color: bool,
    pub verbose: u8,
    pub quiet: bool,
}

impl Output {
    pub fn new(g: &crate::command::Global) -> Output {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match g.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color_env && std::io::stderr().is_terminal(),
        };
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color);
        let _ = miette::set_hook(Box::new(move |_| {
            Box::new(
                miette::MietteHandlerOpts::new()
                    .color(color)
                    .unicode(color)
                    .terminal_links(false)
                    .width(110)
                    .build(),
            )
        }));
        Output { color, verbose: g.verbose, quiet: g.quiet }
    }

    /// A rich diagnostic (file:line:col, underlined spans) on stderr.
    pub fn diagnostic(&self, d: impl miette::Diagnostic + Send + Sync + 'static) {
        eprintln!("{:?}", miette::Report::new(d));
    }

    pub fn error(&self, msg: &str) {
        eprintln!("{} {msg}", console::style("error:").red().bold());
    }

    pub fn warn(&self, msg: &str) {
        eprintln!("{} {msg}", console::style("warning:").yellow().bold());
    }

    /// Progress and status lines (suppressed by -q).
    pub fn info(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A detail line shown with -v, stamped with the time since start.
    pub fn detail(&self, msg: &str) {
        if self.verbose > 0 {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            let t = START.get_or_init(std::time::Instant::now).elapsed();
            eprintln!("{} {msg}", console::style(format!("[{:>7.2}s]", t.as_secs_f64())).dim());
        }
    }

    pub fn bold(&self, s: &str) -> String {
        console::style(s).bold().to_string()
    }

    pub fn dim(&self, s: &str) -> String {
        console::style(s).dim().to_string()
    }
}
