//! Cluster-wide counting in Redis: the same buckets and spend windows as [`super::local`], kept in one
//! hash per scope and changed only by Lua scripts, so a check and its commit are atomic across replicas.
//!
//! Admission is one script call (one round trip) covering every scope of the call. On a Redis in
//! cluster mode (`cluster_enabled:1`, read when connecting) one script may touch only keys of one hash
//! slot: the scopes in the consumer's slot are checked by one call, and a route's total, shared by all
//! consumers and so in a slot of its own, by a second call of the same script in the same pipeline
//! (still one round trip). Settlements are not
//! on the request path: they are queued and sent in batches, one pipeline per batch. Redis's own clock
//! (`TIME`) times the buckets, so replicas with drifting clocks still agree.
//!
//! `rediss://` URLs are served over TLS (rustls; the system's roots, or the CA of [`RedisLogin`]), and
//! an ACL user and password may come from the URL or from [`RedisLogin`]. Neither the password nor a
//! URL that may carry one is ever written to a log or an error message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::local::{Bucket, Ceilings, Counters, Spend};

/// How long a scope's counters are kept after their last change: past any month.
const KEY_TTL_MS: i64 = 40 * 86_400_000;
/// Budget reservations are kept per epoch of this length, the current and the previous one: a
/// reservation whose settlement was lost (Redis failed, a proxy died) is forgotten within two epochs.
pub const RESERVATION_EPOCH_MS: i64 = 300_000;
/// Most settlements sent in one pipeline.
const SETTLE_BATCH: usize = 256;

/// Checks every scope, and commits the call to all of them only if all admit it.
/// KEYS: one hash per scope. ARGV: token estimate, day, month, key TTL, budget reservation
/// (micro-dollars), reservation epoch length, then per key four ceilings (requests/min, tokens/min,
/// daily and monthly micro-dollars; -1 for none).
/// Returns {verdict, refusing scope (1-based), now_ms, then per key: requests level x1000,
/// tokens level x1000, spend today, spend this month, reserved}. Verdicts: 0 admitted, 1 requests,
/// 2 tokens, 3 daily budget, 4 monthly budget (checked in the order 4, 3, 1, 2, like the local
/// arithmetic, reservations included). Reservations live in `rv` (epoch `re`) and `rp` (epoch re-1).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local asked = tonumber(ARGV[1])
local day, month, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local reserve, epoch = tonumber(ARGV[5]), math.floor(now / tonumber(ARGV[6]))
local function level(used, at, limit)
  if not used or not at then return 0 end
  local l = tonumber(used) - (now - tonumber(at)) * limit / 60000
  if l < 0 then return 0 end
  return l
end
local reply = {0, 0, now}
local state = {}
for i, key in ipairs(KEYS) do
  local b = 6 + (i - 1) * 4
  local rl, tl = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local dl, ml = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local h = redis.call('HMGET', key, 'ru', 'ra', 'tu', 'ta', 'dw', 'ds', 'mw', 'ms', 're', 'rv', 'rp')
  local ru, tu = 0, 0
  if rl >= 0 then ru = level(h[1], h[2], rl) end
  if tl >= 0 then tu = level(h[3], h[4], tl) end
  local ds, ms = 0, 0
  if h[5] == day then ds = tonumber(h[6]) end
  if h[7] == month then ms = tonumber(h[8]) end
  local cur, prev = 0, 0
  local re = tonumber(h[9])
  if re == epoch then cur, prev = tonumber(h[10]) or 0, tonumber(h[11]) or 0
  elseif re == epoch - 1 then prev = tonumber(h[10]) or 0 end
  local pending = cur + prev
  local function over(limit, spent)
    local committed = spent + pending
    return not (committed < limit and (pending == 0 or committed + reserve <= limit))
  end
  local n = asked
  if tl >= 0 and n > tl then n = tl end
  state[i] = {ru, tu, rl, tl, n, cur, prev, dl >= 0 or ml >= 0}
  reply[#reply + 1] = math.floor(ru * 1000)
  reply[#reply + 1] = math.floor(tu * 1000)
  reply[#reply + 1] = ds
  reply[#reply + 1] = ms
  reply[#reply + 1] = pending
  if reply[1] == 0 then
    if ml >= 0 and over(ml, ms) then reply[1] = 4
    elseif dl >= 0 and over(dl, ds) then reply[1] = 3
    elseif rl >= 0 and ru + 1 > rl then reply[1] = 1
    elseif tl >= 0 and ((n == 0 and tu >= tl) or (n > 0 and tu + n > tl)) then reply[1] = 2
    end
    if reply[1] ~= 0 then reply[2] = i end
  end
end
if reply[1] == 0 then
  for i, key in ipairs(KEYS) do
    local s = state[i]
    if s[3] >= 0 then redis.call('HSET', key, 'ru', string.format('%.17g', s[1] + 1), 'ra', now) end
    if s[4] >= 0 then redis.call('HSET', key, 'tu', string.format('%.17g', s[2] + s[5]), 'ta', now) end
    if s[8] and reserve > 0 then
      redis.call('HSET', key, 're', epoch, 'rv', string.format('%.0f', s[6] + reserve),
        'rp', string.format('%.0f', s[7]))
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
return reply
"#;

/// Replaces a call's token estimate with its real usage, adds its cost to the spend windows and gives
/// back its budget reservation; a call admitted by some scopes and refused by others gives back its
/// request too. KEYS: the call's scopes. ARGV: estimate, tokens used, cost (micro-dollars), day,
/// month, key TTL, reservation, its epoch, epoch length, requests given back (0 or 1), then per key
/// its tokens/min and requests/min ceilings (-1 for none).
const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local estimate, used, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local day, month, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local reserved, reserved_in = tonumber(ARGV[7]), tonumber(ARGV[8])
local epoch = math.floor(now / tonumber(ARGV[9]))
local back = tonumber(ARGV[10])
for i, key in ipairs(KEYS) do
  local tl, rl = tonumber(ARGV[9 + 2 * i]), tonumber(ARGV[10 + 2 * i])
  if back > 0 and rl >= 0 then
    local h = redis.call('HMGET', key, 'ru', 'ra')
    if h[1] and h[2] then
      local ru = tonumber(h[1]) - (now - tonumber(h[2])) * rl / 60000 - back
      if ru < 0 then ru = 0 end
      redis.call('HSET', key, 'ru', string.format('%.17g', ru), 'ra', now)
    end
  end
  if reserved > 0 then
    local h = redis.call('HMGET', key, 're', 'rv', 'rp')
    local re = tonumber(h[1])
    if re then
      local cur, prev = 0, 0
      if re == epoch then cur, prev = tonumber(h[2]) or 0, tonumber(h[3]) or 0
      elseif re == epoch - 1 then prev = tonumber(h[2]) or 0 end
      if reserved_in == epoch then cur = math.max(0, cur - reserved)
      elseif reserved_in == epoch - 1 then prev = math.max(0, prev - reserved) end
      redis.call('HSET', key, 're', epoch, 'rv', string.format('%.0f', cur),
        'rp', string.format('%.0f', prev))
    end
  end
  if tl >= 0 and estimate ~= used then
    local h = redis.call('HMGET', key, 'tu', 'ta')
    local tu = 0
    if h[1] and h[2] then
      tu = tonumber(h[1]) - (now - tonumber(h[2])) * tl / 60000
      if tu < 0 then tu = 0 end
    end
    local charged = estimate
    if charged > tl then charged = tl end
    tu = tu - charged + used
    if tu < 0 then tu = 0 end
    redis.call('HSET', key, 'tu', string.format('%.17g', tu), 'ta', now)
  end
  if cost > 0 then
    local h = redis.call('HMGET', key, 'dw', 'ds', 'mw', 'ms')
    local ds, ms = 0, 0
    if h[1] == day then ds = tonumber(h[2]) end
    if h[3] == month then ms = tonumber(h[4]) end
    redis.call('HSET', key, 'dw', day, 'ds', string.format('%.0f', ds + cost),
      'mw', month, 'ms', string.format('%.0f', ms + cost))
  end
  redis.call('PEXPIRE', key, ttl)
end
return 1
"#;

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Not connected (yet, or since a failure).
    #[error("not connected to Redis")]
    Down,
    /// No answer in time.
    #[error("Redis did not answer in time")]
    Timeout,
    /// The command failed.
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
    /// The script answered something unexpected.
    #[error("unexpected reply from the admission script")]
    Reply,
}

/// One scope as Redis counts it.
pub struct RedisScope {
    /// The hash key.
    pub key: String,
    /// Full (cluster-wide) ceilings.
    pub ceilings: Ceilings,
}

/// What the admission script said.
pub struct RedisDecision {
    /// 0 admitted, else the exceeded ceiling (see [`ADMIT`]).
    pub verdict: i64,
    /// Index of the refusing scope.
    pub scope: usize,
    /// Redis's clock.
    pub now_ms: i64,
    /// Each scope's counters as read before the call.
    pub counters: Vec<Counters>,
}

/// A call's settlement, waiting to be sent.
pub struct Settlement {
    /// The call's scope keys in one hash slot, with their tokens/min and requests/min ceilings (-1 for
    /// none).
    pub keys: Vec<SettledKey>,
    /// Whether the call's request is given back too (it was refused by a scope of another slot).
    pub give_back_request: bool,
    /// Tokens counted at admission.
    pub estimate: u64,
    /// Tokens really used.
    pub used: u64,
    /// Cost in micro-dollars.
    pub cost_micro_usd: u64,
    /// Budget the call reserved at admission (micro-dollars), to give back.
    pub reserved_micro_usd: u64,
    /// The reservation epoch it was made in (Redis time / [`RESERVATION_EPOCH_MS`]).
    pub reserved_in: i64,
    /// Day and month numbers at settlement.
    pub day: i64,
    /// Month number.
    pub month: i64,
}

/// One key a settlement changes.
#[derive(Clone, Debug)]
pub struct SettledKey {
    /// The hash key.
    pub key: String,
    /// Its tokens/min ceiling, -1 for none.
    pub tokens: i64,
    /// Its requests/min ceiling, -1 for none.
    pub requests: i64,
}

/// How to log in to Redis beyond what its URL says. Its `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct RedisLogin {
    /// ACL user (Redis 6+); replaces the URL's.
    pub username: Option<String>,
    /// Password of that user (or of `default`); replaces the URL's.
    pub password: Option<String>,
    /// PEM CA certificates that verify a `rediss://` server, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLogin")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Why a Redis client could not be made from a URL and login; worded without either.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// The URL does not parse as a Redis URL.
    #[error("the Redis URL is not valid ({0})")]
    Url(String),
    /// A CA was given for a URL that does not use TLS.
    #[error("a Redis CA file needs a rediss:// URL")]
    CaWithoutTls,
    /// The CA file holds no usable certificate.
    #[error("the Redis CA file holds no usable PEM certificate")]
    Ca,
}

/// A client for `url` with `login` applied.
pub fn client(url: &str, login: &RedisLogin) -> Result<redis::Client, RedisConfigError> {
    use redis::IntoConnectionInfo;
    // The parser's own message may quote the URL, password included: only its kind is kept.
    let info = url
        .into_connection_info()
        .map_err(|e| RedisConfigError::Url(e.category().to_owned()))?;
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &login.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &login.password {
        settings = settings.set_password(password);
    }
    let info = info.set_redis_settings(settings);
    match &login.ca_pem {
        None => {
            redis::Client::open(info).map_err(|e| RedisConfigError::Url(e.category().to_owned()))
        }
        Some(_) if !tls => Err(RedisConfigError::CaWithoutTls),
        Some(ca) if !holds_certificates(ca) => Err(RedisConfigError::Ca),
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        )
        .map_err(|_| RedisConfigError::Ca),
    }
}

/// Whether `pem` holds at least one certificate and nothing unreadable (the client would otherwise
/// trust nothing and fail every connection with a less telling error).
fn holds_certificates(pem: &[u8]) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut found = false;
    for cert in CertificateDer::pem_slice_iter(pem) {
        if cert.is_err() {
            return false;
        }
        found = true;
    }
    found
}

/// A Redis connection that may come and go.
pub struct RedisCounters {
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    /// Whether the server runs in cluster mode, where a script's keys must share one hash slot.
    cluster: AtomicBool,
    timeout: Duration,
    admit: redis::Script,
    settle: redis::Script,
    queue: mpsc::UnboundedSender<Settlement>,
    queued: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Settlement>>>,
}

fn limit_arg(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl RedisCounters {
    /// A client for `url` (e.g. `redis://redis:6379/0` or `rediss://user:password@redis:6380/0`)
    /// logging in with `login`; nothing is connected until [`Self::maintain`] runs.
    pub fn new(url: &str, login: &RedisLogin, timeout: Duration) -> Result<Self, RedisConfigError> {
        let (queue, queued) = mpsc::unbounded_channel();
        Ok(Self {
            client: client(url, login)?,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            cluster: AtomicBool::new(false),
            timeout,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            queue,
            queued: std::sync::Mutex::new(Some(queued)),
        })
    }

    /// Whether the server said it runs in cluster mode when last connected.
    pub fn is_cluster(&self) -> bool {
        self.cluster.load(Ordering::Relaxed)
    }

    /// Whether the last command succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The connection while Redis is up, for other users of the same Redis (the response cache).
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn
            .load_full()
            .map(|c| MultiplexedConnection::clone(&c))
    }

    /// Longest wait for one command on the request path.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Marks the connection broken; returns whether it was up until now (a fallback event).
    pub fn mark_down(&self) -> bool {
        self.conn.store(None);
        self.up.swap(false, Ordering::Relaxed)
    }

    /// Connects, loads the scripts and publishes the connection.
    async fn connect(&self) -> Result<(), RedisError> {
        let work = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(ADMIT)
                .query_async::<String>(&mut conn)
                .await?;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SETTLE)
                .query_async::<String>(&mut conn)
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((conn, cluster_enabled(&info)))
        };
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), work).await {
            Ok(Ok((conn, cluster))) => {
                self.cluster.store(cluster, Ordering::Relaxed);
                self.conn.store(Some(Arc::new(conn)));
                self.up.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    /// Keeps the connection alive: reconnects every `every` while down, reporting the state to
    /// `report(up)` after each look; and sends queued settlements in batches. Runs forever.
    pub async fn maintain(
        self: Arc<Self>,
        every: Duration,
        report: impl Fn(bool) + Send + 'static,
    ) {
        if let Some(queued) = self.queued.lock().expect("queue lock").take() {
            tokio::spawn(self.clone().flush(queued));
        }
        // The last failure logged, so that a Redis that stays away is reported once, not twice a second.
        let mut reported: Option<String> = None;
        loop {
            if !self.is_up() {
                match self.connect().await {
                    Ok(()) => {
                        reported = None;
                        tracing::info!(
                            "connected to Redis: limits and budgets are counted cluster-wide"
                        );
                    }
                    Err(error) => {
                        // The client's errors name the server's refusal (WRONGPASS, NOPERM, a TLS
                        // alert) but neither the password nor the URL.
                        let error = error.to_string();
                        if reported.as_ref() != Some(&error) {
                            tracing::warn!(%error, "cannot connect to Redis; trying again");
                            reported = Some(error);
                        }
                    }
                }
            }
            report(self.is_up());
            tokio::time::sleep(every).await;
        }
    }

    async fn flush(self: Arc<Self>, mut queued: mpsc::UnboundedReceiver<Settlement>) {
        let mut batch = Vec::with_capacity(SETTLE_BATCH);
        while queued.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
            if let Err(error) = self.send_settlements(&batch).await {
                // Lost: the spend and token corrections of this batch are not counted in Redis.
                tracing::warn!(%error, settlements = batch.len(), "could not settle calls in Redis");
                self.mark_down();
            }
            batch.clear();
        }
    }

    async fn send_settlements(&self, batch: &[Settlement]) -> Result<(), RedisError> {
        let conn = self.conn.load_full().ok_or(RedisError::Down)?;
        let mut conn = MultiplexedConnection::clone(&conn);
        let mut pipe = redis::pipe();
        for s in batch {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.settle.get_hash()).arg(s.keys.len());
            for k in &s.keys {
                cmd.arg(&k.key);
            }
            cmd.arg(s.estimate)
                .arg(s.used)
                .arg(s.cost_micro_usd)
                .arg(s.day)
                .arg(s.month)
                .arg(KEY_TTL_MS)
                .arg(s.reserved_micro_usd)
                .arg(s.reserved_in)
                .arg(RESERVATION_EPOCH_MS)
                .arg(u8::from(s.give_back_request));
            for k in &s.keys {
                cmd.arg(k.tokens).arg(k.requests);
            }
            pipe.add_command(cmd).ignore();
        }
        let timeout = self.timeout * 4;
        match tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn)).await {
            Err(_) => Err(RedisError::Timeout),
            Ok(result) => Ok(result?),
        }
    }

    /// Queues a settlement for the next batch.
    pub fn settle(&self, settlement: Settlement) {
        let _ = self.queue.send(settlement);
    }

    /// Asks Redis whether a call fits every scope of each group (the scopes of one hash slot),
    /// committing it to a group if that group admits it. One round trip: one script call per group, in
    /// one pipeline when there are two. A group's decision stands alone: the caller gives back what an
    /// admitting group charged when another refused.
    pub async fn admit(
        &self,
        groups: &[&[RedisScope]],
        tokens: u64,
        reserve: u64,
        day: i64,
        month: i64,
    ) -> Result<SmallVec<[RedisDecision; 2]>, RedisError> {
        let conn = self.conn.load_full().ok_or(RedisError::Down)?;
        let mut conn = MultiplexedConnection::clone(&conn);
        let replies: Vec<Vec<i64>> = if let [scopes] = groups {
            let mut invocation = self.admit.prepare_invoke();
            for s in *scopes {
                invocation.key(&s.key);
            }
            admit_args(&mut invocation, scopes, tokens, reserve, day, month);
            match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
                Err(_) => return Err(RedisError::Timeout),
                Ok(reply) => vec![reply?],
            }
        } else {
            let mut pipe = redis::pipe();
            for scopes in groups {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.admit.get_hash()).arg(scopes.len());
                for s in *scopes {
                    cmd.arg(&s.key);
                }
                admit_args(&mut cmd, scopes, tokens, reserve, day, month);
                pipe.add_command(cmd);
            }
            let sent = async {
                match pipe.query_async(&mut conn).await {
                    // The script cache was emptied (SCRIPT FLUSH, a failover) under a live connection:
                    // load it again and send once more.
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        self.admit.load_async(&mut conn).await?;
                        pipe.query_async(&mut conn).await
                    }
                    other => other,
                }
            };
            match tokio::time::timeout(self.timeout, sent).await {
                Err(_) => return Err(RedisError::Timeout),
                Ok(replies) => replies?,
            }
        };
        if replies.len() != groups.len() {
            return Err(RedisError::Reply);
        }
        replies
            .into_iter()
            .zip(groups)
            .map(|(reply, scopes)| decision(&reply, scopes.len(), day, month))
            .collect()
    }
}

/// Whether `INFO cluster` says `cluster_enabled:1`.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|l| l.trim_end() == "cluster_enabled:1")
}

/// The admission script's arguments after its keys.
fn admit_args(
    to: &mut impl ScriptArgs,
    scopes: &[RedisScope],
    tokens: u64,
    reserve: u64,
    day: i64,
    month: i64,
) {
    to.push(tokens as i64);
    to.push(day);
    to.push(month);
    to.push(KEY_TTL_MS);
    to.push(i64::try_from(reserve).unwrap_or(i64::MAX));
    to.push(RESERVATION_EPOCH_MS);
    for s in scopes {
        let c = &s.ceilings;
        to.push(limit_arg(c.requests));
        to.push(limit_arg(c.tokens));
        to.push(limit_arg(c.daily_micro_usd));
        to.push(limit_arg(c.monthly_micro_usd));
    }
}

/// Where script arguments go: a prepared invocation or a raw command.
trait ScriptArgs {
    fn push(&mut self, v: i64);
}

impl ScriptArgs for redis::ScriptInvocation<'_> {
    fn push(&mut self, v: i64) {
        self.arg(v);
    }
}

impl ScriptArgs for redis::Cmd {
    fn push(&mut self, v: i64) {
        self.arg(v);
    }
}

/// One group's admission reply read back: {verdict, refusing scope, now_ms, then five numbers per
/// scope}.
fn decision(
    reply: &[i64],
    scopes: usize,
    day: i64,
    month: i64,
) -> Result<RedisDecision, RedisError> {
    if reply.len() != 3 + 5 * scopes {
        return Err(RedisError::Reply);
    }
    let now_ms = reply[2];
    let counters = reply[3..]
        .chunks_exact(5)
        .map(|c| Counters {
            requests: Bucket {
                used: c[0] as f64 / 1_000.0,
                at_ms: now_ms,
            },
            tokens: Bucket {
                used: c[1] as f64 / 1_000.0,
                at_ms: now_ms,
            },
            day: Spend {
                window: day,
                micro_usd: c[2].max(0) as u64,
            },
            month: Spend {
                window: month,
                micro_usd: c[3].max(0) as u64,
            },
            reserved_micro_usd: c[4].max(0) as u64,
        })
        .collect();
    Ok(RedisDecision {
        verdict: reply[0],
        scope: usize::try_from(reply[1] - 1).unwrap_or(0),
        now_ms,
        counters,
    })
}
