//! etcd-ca: a certificate authority built for etcd clusters.
pub mod duration;
pub mod names;
pub mod pki;
pub mod policy;
