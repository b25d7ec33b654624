//! A cluster started by boot_all_nodes.sh in a temp dir, as a user boots
//! one (with `--lab`, so `raftctl web --lab` and `raftctl check` can stop,
//! restart and cut off its nodes); every pid in its pid files is killed
//! at the end, those the lab restarted included.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Ports, RAFTNODE, TEST_TIMING, reserve_ports};

pub struct Booted {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    _ports: Ports,
}

impl Booted {
    /// `n` nodes with the test timings and `--lab`.
    pub fn start(n: usize) -> Booted {
        Booted::start_with(n, "")
    }

    /// The same, with `extra` added to every node's flags.
    pub fn start_with(n: usize, extra: &str) -> Booted {
        let dir = tempfile::tempdir().unwrap();
        let ports = reserve_ports(n);
        let config_path = dir.path().join("config.txt");
        std::fs::write(&config_path, ports.config_text()).unwrap();
        let booted = Booted {
            dir,
            config_path,
            _ports: ports,
        };
        let bin_dir = Path::new(RAFTNODE).parent().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot_all_nodes.sh");
        let out = Command::new(script)
            .arg(&booted.config_path)
            .env("STATE_DIR", booted.state_dir())
            .env("DEBUG_DIR", booted.debug_dir())
            .env("RAFT_BIN_DIR", bin_dir)
            .env(
                "RAFTNODE_ARGS",
                format!("{} --lab {extra}", TEST_TIMING.join(" ")),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "boot_all_nodes.sh: {out:?}");
        booted
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn debug_dir(&self) -> PathBuf {
        self.dir.path().join("debug")
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        super::kill_nodes_of(&self.state_dir());
    }
}
