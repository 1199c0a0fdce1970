//! The Qlik "load balancing module": `POST <base_path>loadbalancing/prioritize`.
