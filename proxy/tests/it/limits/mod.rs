//! Request, token and budget limits: enforced by one proxy in process (`local`), and shared through a
//! real Redis by two proxy processes (`redis`), over TLS with an ACL user (`redis_login`).

mod local;
mod redis;
mod redis_login;
