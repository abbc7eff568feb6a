//! Log volume and secrets in logs: refusals are aggregated, tokens never logged.
