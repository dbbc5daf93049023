//! The integration tests, one binary: linking one test binary instead of
//! forty (each a full static link of certshift and its dependencies) is most
//! of what the CI test build costs. Each module is one former test file, and
//! `common` is what they share.

mod common;

mod admin_guard;
mod audit_cli;
mod audit_differential;
mod audit_fuzz;
mod audit_peers;
mod audit_serve;
mod bench;
mod chain_entries;
mod ci_workflow;
mod held_memory;
mod hostile_slots;
mod layers;
mod load;
mod load_bounds;
mod messages;
mod pki_cli;
mod pki_mutations;
mod pki_openssl;
mod pki_own_ca;
mod proptest_parsers;
mod proxy_cli;
mod proxy_config;
mod proxy_kx;
mod proxy_mutations;
mod proxy_nginx;
mod proxy_on_rotate;
mod proxy_plan;
mod proxy_rotation;
mod proxy_swap;
mod proxy_verdicts;
mod proxy_wire;
mod reload_guard;
mod rotation_test;
mod serve_admin;
mod serve_cli;
mod serve_enforcement;
mod serve_limits;
mod serve_reload;
mod serve_resumption;
mod server_suites;
mod silent_weakening;
mod watch_replace;
mod workers;
