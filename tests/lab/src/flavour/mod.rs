//! Board flavours: what an emulated board claims to be (os-release text, machine architecture,
//! extra release files). Pure data; owns nothing on disk and starts nothing.

/// What a board looks like to anything that asks (`/etc/os-release`, `uname -m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavour {
    /// Short name, e.g. `openeuler-24.03-riscv64`.
    pub name: String,
    /// Content of /etc/os-release (and /usr/lib/os-release).
    pub os_release: String,
    /// What `uname -m` prints.
    pub arch: String,
    /// Further files written into the board's /etc: (absolute path, content).
    pub extra_files: Vec<(String, String)>,
    /// Commands of this OS the host (Debian) lacks: (path below /usr, e.g. `bin/firewall-cmd`, script).
    pub commands: Vec<(String, String)>,
    /// Units enabled on a fresh board (their files come with `extra_files`); started at boot.
    pub enabled_units: Vec<String>,
}

const FIREWALLD_UNIT: &str = "[Unit]\nDescription=firewalld - dynamic firewall daemon\n[Service]\nExecStart=/usr/sbin/firewalld --nofork --nopid\n[Install]\nWantedBy=multi-user.target\n";

impl Flavour {
    /// openEuler 24.03 LTS on riscv64 (the boards of the blog posts).
    pub fn openeuler_2403_riscv64() -> Self {
        Flavour {
            name: "openeuler-24.03-riscv64".into(),
            os_release: concat!(
                "NAME=\"openEuler\"\n",
                "VERSION=\"24.03 (LTS)\"\n",
                "ID=\"openEuler\"\n",
                "VERSION_ID=\"24.03\"\n",
                "PRETTY_NAME=\"openEuler 24.03 (LTS)\"\n",
                "ANSI_COLOR=\"0;31\"\n",
            )
            .into(),
            arch: "riscv64".into(),
            extra_files: vec![
                (
                    "/etc/openEuler-release".into(),
                    "openEuler release 24.03 (LTS)\n".into(),
                ),
                (
                    "/etc/pki/ca-trust/source/anchors/.keep".into(),
                    String::new(),
                ),
                // openEuler runs firewalld by default (docs/k3s-behaviour.md §11.3 firewalld).
                (
                    "/etc/systemd/system/firewalld.service".into(),
                    FIREWALLD_UNIT.into(),
                ),
                // As firewalld's package installs it (the key the emulation reads: its default zone).
                (
                    "/etc/firewalld/firewalld.conf".into(),
                    "# firewalld config file\n\n# default zone\n# The default zone used if an empty zone string is used.\n# Default: public\nDefaultZone=public\n".into(),
                ),
            ],
            commands: vec![
                (
                    "bin/update-ca-trust".into(),
                    include_str!("../../support/update-ca-trust.sh").into(),
                ),
                (
                    "bin/firewall-cmd".into(),
                    include_str!("../../support/firewall-cmd.sh").into(),
                ),
                (
                    "sbin/firewalld".into(),
                    include_str!("../../support/firewalld.sh").into(),
                ),
            ],
            enabled_units: vec!["firewalld.service".into()],
        }
    }

    /// Debian 13 (trixie) on riscv64.
    pub fn debian_13_riscv64() -> Self {
        Flavour {
            name: "debian-13-riscv64".into(),
            os_release: concat!(
                "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
                "NAME=\"Debian GNU/Linux\"\n",
                "VERSION_ID=\"13\"\n",
                "VERSION=\"13 (trixie)\"\n",
                "VERSION_CODENAME=trixie\n",
                "ID=debian\n",
            )
            .into(),
            arch: "riscv64".into(),
            extra_files: vec![("/etc/debian_version".into(), "13.0\n".into())],
            commands: Vec::new(),
            enabled_units: Vec::new(),
        }
    }
}

impl Default for Flavour {
    fn default() -> Self {
        Self::openeuler_2403_riscv64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openeuler_os_release_has_id_and_version() {
        let f = Flavour::openeuler_2403_riscv64();
        assert!(f.os_release.contains("ID=\"openEuler\"\n"));
        assert!(f.os_release.contains("VERSION_ID=\"24.03\"\n"));
        assert_eq!(f.arch, "riscv64");
    }
}
