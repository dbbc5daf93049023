//! # certshift
//!
//! Does a service really enforce client certificates, and does it survive
//! certificate rotation under load? certshift answers both with real TLS
//! handshakes over real sockets.
//!
//! ```text
//!  client ──TCP/TLS/mTLS──▶ [proxy: listener] ──▶ [relay] ──▶ [connector] ──TLS + chosen cert──▶ service
//!                               │                  │              ▲
//!                         server creds         metrics        plan picks the credential;
//!                          (rotating)      (histograms,      creds holds the live identity
//!                                           timeline)        and the PKI's bad variants
//!
//!  pki ──writes──▶ test PKI on disk (manifest.toml: every credential and its expected verdict)
//!  creds ──loads, checks, publishes (Live<T>); reload on file change / SIGHUP
//!  tls ──rustls configs from checked material; Outcome and Verdict of every attempt
//!  probe ──one client experiment: connect, handshake with a chosen cert, request
//!  serve ──the reference mTLS service (modes, policy) experiments are judged against
//!  load  ──open-loop operations (handshake/request/keepalive) at intended times;
//!          per-recorder histograms, an operation log, merged at the end
//!  report ──load runs as JSON, table, HdrHistogram interval log, SVG; `report merge|show`
//!  rotation_test ──load while client/server/CA-bundle credentials rotate; the downtime
//!  demo  ──PKI + serve + proxy (mostly valid, every bad variant) + load + rotations
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | clap definitions, dispatch, exit codes (0 ok, 1 failure found, 2 usage/config) |
//! | [`pki`] | test PKI generation (rcgen), the variant catalogue, `manifest.toml`, inspection |
//! | [`creds`] | loading and checking credential files; live values and reload triggers |
//! | [`tls`] | rustls config builders, SPIFFE and accept-anything verifiers, [`tls::Outcome`] |
//! | [`plan`] | which credential each proxied connection presents, and its expected verdict |
//! | [`metrics`] | per-connection reports aggregated off the hot path: HdrHistograms, counters, timeline, exporters |
//! | [`accept`] | the accept loop shared by servers: connection cap, back-off, drain then close |
//! | [`proxy`] | the intercepting proxy: listener, connector, relay, rotation sources, `--on-rotate` |
//! | [`admin`] | the proxy's admin HTTP API (stats, Prometheus metrics, timeline, rotate) |
//! | [`probe`] | one connection experiment with per-phase timeouts |
//! | [`serve`] | the reference mTLS HTTP/1.1 service with an Istio-style policy |
//! | [`load`] | the open-loop load generator: schedule, operations, recorders |
//! | [`report`] | load reports: JSON contract, tables, output files, SVG plots, merge/show |
//! | [`rotation_test`] | rotations under load on the embedded default or a target; windows and downtime |
//! | [`demo`] | the README's main job |
//!
//! Dependencies point down the data flow: `demo` and `rotation_test` drive
//! `serve`, `proxy` and `load`; `report` renders `load` runs (and `load`'s
//! command writes through it); `proxy`, `admin`, `serve` and `load` use
//! `plan`, `metrics`, `probe`, `tls`, `creds`, `pki`; nothing below depends
//! on what is above it.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod cli;
pub mod creds;
pub mod demo;
pub mod load;
pub mod metrics;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod rotation_test;
pub mod serve;
pub mod spiffe;
pub mod tls;
pub mod x509;
