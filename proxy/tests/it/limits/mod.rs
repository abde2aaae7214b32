//! Request, token and budget limits: enforced by one proxy in process (`local`), and shared through a
//! real Redis by two proxy processes (`redis`).

mod local;
mod redis;
