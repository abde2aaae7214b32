//! A real `redis-server` that speaks only TLS to clients (`--tls-port`, a certificate made here) and
//! knows one ACL user, whose keys must start with `tollgate:`: the proxy reaches it with `rediss://`,
//! `--redis-ca-file`, `--redis-username` and `--redis-password-file` (or the password in the URL),
//! counts limits in it, and writes the password to neither log; a wrong password, an untrusted
//! certificate or a plain-text client are refused and reported without it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::redis::{KEY, burst, config, wait_redis};
use crate::support::redis::{Redis, redis_command, redis_reply_lines_as};
use crate::support::standalone_bin::{Proxy, free_port};

const USER: &str = "tollgate-proxy";
const PASSWORD: &str = "s3cret-Redis-pw-7f1c9e2a";

/// A proxy counting in Redis with `args`, its diagnostic log kept.
fn proxy(dir: &Path, name: &str, args: &[&str]) -> Proxy {
    let mut all = vec!["--replicas", "2", "--access-log", "stdout"];
    all.extend_from_slice(args);
    Proxy::start_logging(dir, name, &all)
}

/// Waits up to 15 s for `proxy`'s diagnostic log to contain `text`.
fn wait_log(proxy: &Proxy, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = proxy.stderr_text();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the proxy's log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_count_in_redis_over_tls_as_an_acl_user_and_the_password_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert, key) = (d.join("redis.crt"), d.join("redis.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let other_ca = d.join("other-ca.crt");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let password_file = d.join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_file = d.join("wrong-password");
    std::fs::write(&wrong_file, "not-the-password\n").unwrap();
    std::fs::write(
        d.join("config.yaml"),
        config().replace("requestsPerMinute: 60", "requestsPerMinute: 4"),
    )
    .unwrap();

    // Plain text on `plain` only for the test's own looks (AUTH needed there too); clients on `tls`.
    let (plain, tls) = (free_port(), free_port());
    // redis-server reads the words after `--user` as one ACL rule line.
    let password = format!(">{PASSWORD}");
    let redis = Redis::start_with(
        plain,
        &[
            "--tls-port",
            &tls.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            USER,
            "on",
            &password,
            "~tollgate:*",
            "+@all",
        ],
        Some((USER, PASSWORD)),
    );
    assert!(
        redis_command(plain, "PING").unwrap().starts_with("-NOAUTH"),
        "the default user is off"
    );
    let url = format!("rediss://127.0.0.1:{tls}/0");
    let ca = cert.to_str().unwrap();
    let password_path = password_file.to_str().unwrap();

    // 1. The right user, password and CA: counted in Redis, cluster-wide (the limit of 4 is held by
    // one replica of two, so it counts in Redis, not on its share of 2).
    let good = proxy(
        d,
        "good.log",
        &[
            "--redis-url",
            &url,
            "--redis-ca-file",
            ca,
            "--redis-username",
            USER,
            "--redis-password-file",
            password_path,
        ],
    );
    wait_redis(&good, true);
    let tally = burst(&[good.port], 8, None).await;
    assert_eq!((tally.admitted, tally.limited), (4, 4), "{tally:?}");
    assert_eq!(
        redis_reply_lines_as(
            plain,
            (USER, PASSWORD),
            "EXISTS tollgate:limits:{default/app}:s:default/app-demo"
        )
        .unwrap()[0],
        ":1"
    );

    // 2. The password in the URL (percent-encoded as a URL needs), no username flag: the URL's user.
    let in_url = proxy(
        d,
        "in-url.log",
        &[
            "--redis-url",
            &format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{tls}/0"),
            "--redis-ca-file",
            ca,
        ],
    );
    wait_redis(&in_url, true);
    let after = burst(&[in_url.port], 2, None).await;
    assert_eq!(after.limited, 2, "shares the spent limit: {after:?}");

    // 3. Refusals: each stays on local shares and says why, once, without the password.
    let wrong = proxy(
        d,
        "wrong.log",
        &[
            "--redis-url",
            &url,
            "--redis-ca-file",
            ca,
            "--redis-username",
            USER,
            "--redis-password-file",
            wrong_file.to_str().unwrap(),
        ],
    );
    let untrusted = proxy(
        d,
        "untrusted.log",
        &[
            "--redis-url",
            &format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{tls}/0"),
            "--redis-ca-file",
            other_ca.to_str().unwrap(),
        ],
    );
    let cleartext = proxy(
        d,
        "cleartext.log",
        &[
            "--redis-url",
            &format!("redis://{USER}:{PASSWORD}@127.0.0.1:{tls}/0"),
        ],
    );
    let wrong_log = wait_log(&wrong, "cannot connect to Redis");
    assert!(
        wrong_log.contains("Password authentication failed"),
        "{wrong_log}"
    );
    let untrusted_log = wait_log(&untrusted, "cannot connect to Redis");
    assert!(
        untrusted_log.to_lowercase().contains("certificate"),
        "{untrusted_log}"
    );
    wait_log(&cleartext, "cannot connect to Redis");
    for p in [&wrong, &untrusted, &cleartext] {
        assert_eq!(p.metric("tollgate_limits_redis_up"), Some(0.0));
        // Local shares: 2 of the 4.
        let local = burst(&[p.port], 3, None).await;
        assert_eq!((local.admitted, local.limited), (2, 1), "{local:?}");
    }
    // Let the reconnect loop run a few more rounds: a failure that repeats is logged once.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        wrong
            .stderr_text()
            .matches("cannot connect to Redis")
            .count(),
        1
    );

    for p in [&good, &in_url, &wrong, &untrusted, &cleartext] {
        for text in [p.stderr_text(), p.log_text()] {
            assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
        }
    }
    // The key of the test's clients is also never in a log (sanity of the check above).
    assert!(!good.stderr_text().contains(KEY));
    drop((good, in_url, wrong, untrusted, cleartext));
    redis.kill();
}

/// Startup mistakes are refused with a message that quotes neither the URL nor the password.
#[test]
fn a_bad_redis_configuration_stops_the_proxy_without_quoting_the_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config()).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate").unwrap();
    let ca = ca.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--redis-url", &format!("redis+bogus://u:{PASSWORD}@h:1/0")],
            "the Redis URL is not valid",
        ),
        (
            &[
                "--redis-url",
                &format!("redis://u:{PASSWORD}@h:1/0"),
                "--redis-ca-file",
                ca,
            ],
            "a Redis CA file needs a rediss:// URL",
        ),
        (
            &[
                "--redis-url",
                &format!("rediss://u:{PASSWORD}@h:1/0"),
                "--redis-ca-file",
                ca,
            ],
            "the Redis CA file holds no usable PEM certificate",
        ),
        (&["--redis-username", "u"], "need --redis-url"),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("standalone")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{args:?} leaked: {stderr}");
    }
}
