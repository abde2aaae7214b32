//! What the cluster changes on the host, outside its scratch directory, and how it is undone: the
//! bridge, iptables rules and chains, network namespaces, mounts, cgroups, leftover processes.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};

use super::{BRIDGE, NODE_IP, RULE_COMMENT};

pub(super) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(anyhow!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(super) fn iptables(args: &[&str]) -> Result<()> {
    run(Command::new("iptables").arg("-w").args(args)).map(drop)
}

pub(super) fn make_bridge() -> Result<()> {
    run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/16"), "dev", BRIDGE]))?;
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    Ok(())
}

/// Removes the bridge, kube-proxy's and the kubelet's chains and this harness's rules, if a run left them.
pub(super) fn sweep_network(bin_dir: &Path) {
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let _ = run(Command::new("ip").args(["link", "delete", BRIDGE]));
    }
    let _ = run(Command::new(bin_dir.join("kube-proxy")).arg("--cleanup"));
    // What kube-proxy's cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, which drops packets to
    // 127.0.0.0/8 from other sources, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT), in both families.
    for family in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            remove_kube_chains(family, table);
        }
    }
    // Delete our FORWARD rules one by one (`iptables -S` prints them as the arguments of -A).
    if let Ok(rules) = run(Command::new("iptables").args(["-w", "-S", "FORWARD"])) {
        for rule in rules.lines().filter(|r| r.contains(RULE_COMMENT)) {
            let spec = rule.replacen("-A FORWARD", "", 1);
            let mut words = split_rule(&spec);
            words.insert(0, "FORWARD".to_owned());
            words.insert(0, "-D".to_owned());
            let _ = run(Command::new("iptables").arg("-w").args(&words));
        }
    }
}

/// Deletes the rules that jump to `KUBE-*` chains, then those chains, from one table.
pub(super) fn remove_kube_chains(family: &str, table: &str) {
    let Ok(rules) = run(Command::new(family).args(["-w", "-t", table, "-S"])) else {
        return;
    };
    for rule in rules
        .lines()
        .filter(|r| r.starts_with("-A ") && !r.starts_with("-A KUBE-") && r.contains(" -j KUBE-"))
    {
        let mut words = split_rule(rule);
        words[0] = "-D".to_owned();
        let _ = run(Command::new(family).args(["-w", "-t", table]).args(&words));
    }
    let chains: Vec<&str> = rules
        .lines()
        .filter_map(|r| r.strip_prefix("-N "))
        .filter(|c| c.starts_with("KUBE-"))
        .collect();
    for flag in ["-F", "-X"] {
        for chain in &chains {
            let _ = run(Command::new(family).args(["-w", "-t", table, flag, chain]));
        }
    }
}

/// Splits an `iptables -S` rule into words, keeping quoted comments whole.
pub(super) fn split_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

pub(super) fn netns_names() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points at or below `dir`, deepest first.
pub(super) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// Pids of processes whose command line contains `needle`.
pub(super) fn processes_whose_cmdline_has(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The kubelet's `kubepods` cgroups, deepest first (rmdir fails on a cgroup still in use).
pub(super) fn remove_pod_cgroups() {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for controller in controllers.flatten() {
        let top = controller.path().join("kubepods");
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        let mut all = Vec::new();
        while let Some(d) = dirs.pop() {
            all.push(d.clone());
            if let Ok(entries) = std::fs::read_dir(&d) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                        .map(|e| e.path()),
                );
            }
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in all {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
pub(super) fn stop(child: &mut Child) {
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
