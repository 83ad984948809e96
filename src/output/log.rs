//! Logging with `tracing`: `-v` shows each host's phases with their durations, `-vv` every
//! remote command (first line, secrets redacted) with its duration and exit status; RUST_LOG,
//! when set, decides instead; `--log-format json` writes one JSON object per line (for CI logs).
//! Everything goes to stderr, apart from the plan/apply output on stdout.

use clap::ValueEnum;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The filter for a verbosity: nothing of ours by default (progress lines say enough).
pub fn filter_for(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "warn,rvcluster=info",
        _ => "warn,rvcluster=debug",
    }
}

pub fn init(verbose: u8, format: LogFormat, color: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(filter_for(verbose)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.with_ansi(color).compact().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use crate::transport::cmd::{mask_secrets, redact_command};

    #[test]
    fn secrets_in_commands_are_masked() {
        assert_eq!(mask_secrets("K3S_TOKEN=K10abc::server:xyz sh"), "K3S_TOKEN=<redacted> sh");
        assert_eq!(mask_secrets("k3s agent --token abc --server x"), "k3s agent --token <redacted> --server x");
        assert_eq!(mask_secrets("password: 's3cr3t' x"), "password: <redacted> x");
        assert_eq!(mask_secrets("cat /var/lib/rancher/k3s/server/token"), "cat /var/lib/rancher/k3s/server/token");
        assert_eq!(redact_command("\nexport LC_ALL=C\nsecond"), "export LC_ALL=C");
    }

    #[test]
    fn verbosity_maps_to_filters() {
        assert_eq!(super::filter_for(0), "warn");
        assert!(super::filter_for(1).contains("rvcluster=info"));
        assert!(super::filter_for(3).contains("rvcluster=debug"));
    }
}
