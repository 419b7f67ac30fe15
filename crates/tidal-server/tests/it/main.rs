//! In-process tests of `tidal_server::run`: a server on a listener the test
//! bound, stopped by a future the test completes.

mod health;
mod metrics;
mod run;
mod status_page;
