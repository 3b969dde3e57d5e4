//! Renewal over mTLS: the presented certificate is verified and must be the recorded one;
//! a node renews it and its other certificates in one request.

use super::*;

/// The record of a presented client certificate, checked against it: recorded, byte for byte
/// the certificate presented, not revoked.
pub(super) fn recorded_as_presented(
    record: Option<CertificateRecord>,
    serial: String,
    der: &[u8],
) -> Result<CertificateRecord, AuthorityError> {
    let record = record.ok_or_else(|| AuthorityError::ClientCertificateUnknown {
        serial: serial.clone(),
    })?;
    let recorded = pki::pem_certificates(&record.pem)?;
    if recorded.first().map(Vec::as_slice) != Some(der) {
        return Err(AuthorityError::ClientCertificateUnknown { serial });
    }
    if record.status == CertificateStatus::Revoked {
        return Err(AuthorityError::ClientCertificateRevoked { serial });
    }
    Ok(record)
}

impl Authority {
    /// Checks a client certificate presented over mTLS: issued by a trusted generation, not
    /// expired, a serial this CA recorded (byte for byte), not revoked.
    pub async fn verify_client_certificate(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = self.presented_serial(der, now)?;
        let record = self.store.certificate(&serial, now).await?;
        recorded_as_presented(record, serial, der)
    }

    /// The serial of a presented client certificate that a trusted generation issued (its
    /// signature checked) and that has not expired; nothing read from the store yet.
    pub(super) fn presented_serial(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<String, AuthorityError> {
        let cert =
            pki::parse_certificate(der).map_err(|_| AuthorityError::ClientCertificateUntrusted)?;
        if self.issuing_generation(&cert).is_none() {
            return Err(AuthorityError::ClientCertificateUntrusted);
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(AuthorityError::ClientCertificateExpired { not_after });
        }
        Ok(pki::serial_hex(&cert))
    }

    /// Renews the certificate presented over mTLS. The new certificate keeps the recorded
    /// identity; by default it reuses the public key, or takes the key of `csr` (re-key). Names
    /// in a CSR are ignored: nothing in a renewal request can widen a certificate.
    pub async fn renew(
        &self,
        presented: &[u8],
        csr: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let record = self.verify_client_certificate(presented, now).await?;
        let (public_key, key_type) = match csr {
            Some(pem_text) => {
                let csr =
                    VerifiedCsr::from_pem(pem_text).map_err(|source| AuthorityError::Csr {
                        profile: record.profile.clone(),
                        source,
                    })?;
                (csr.public_key, csr.key_type)
            }
            None => public_key_of(presented)?,
        };
        let actor = format!("cert:{}", record.serial);
        let signed = self
            .sign_renewal(&record, None, &public_key, key_type, &actor, now)
            .await?;
        self.record_one(signed).await
    }

    /// Signs the renewal of a certificate recorded as `record` for the key `public_key` (DER
    /// SubjectPublicKeyInfo), with its recorded identity: policy checked, nothing recorded yet.
    /// `identity` is the node's registered identity when the caller already read it.
    pub(super) async fn sign_renewal(
        &self,
        record: &CertificateRecord,
        identity: Option<&NodeIdentity>,
        public_key: &[u8],
        key_type: KeyType,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Signed, AuthorityError> {
        let sans = record
            .sans
            .iter()
            .map(|s| San::parse_loose(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Fault::Corrupt {
                what: format!("a recorded SAN of certificate {}: {e}", record.serial),
            })?;
        let node: NodeName =
            record
                .node
                .parse()
                .map_err(|e: crate::names::NameError| Fault::Corrupt {
                    what: format!("the node of certificate {}: {e}", record.serial),
                })?;
        let grant = self.policy.evaluate_renewal(
            &Renewal {
                profile: &record.profile,
                node: &node,
                common_name: &record.common_name,
                sans: &sans,
                key_type,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(public_key)
            .map_err(|e| PkiError::Certificate(format!("its public key: {e}")))?;
        let identity = match identity {
            Some(known) => known.clone(),
            None => self
                .store
                .node(&node)
                .await?
                .unwrap_or_else(|| NodeIdentity::new(node.clone(), Vec::new(), Vec::new())),
        };
        let origin = Origin {
            action: AuditAction::Renew,
            actor,
            renewed_from: Some(record.serial.clone()),
        };
        self.sign_for_record(&grant, &identity, &public_key, origin, now)
    }

    /// Renews the presented certificate and the node's other certificates listed by serial, each
    /// with its own recorded identity and key: one connection renews a whole node.
    pub async fn renew_node(
        &self,
        presented: &[u8],
        serials: &[String],
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCertificate>, AuthorityError> {
        let presented_serial = self.presented_serial(presented, now)?;
        // One read for the whole node: the presented certificate, the others listed, and the
        // node's registered identity. A malformed serial is reported only once the presented
        // certificate has passed, as before the reads were batched.
        let mut seen = std::collections::BTreeSet::from([presented_serial.clone()]);
        let listed: Vec<Result<String, AuthorityError>> = serials
            .iter()
            .map(|s| normalize_serial(s))
            .filter(|s| s.as_ref().map_or(true, |s| seen.insert(s.clone())))
            .collect();
        if listed.len() > MAX_SERIALS_PER_NODE {
            return Err(AuthorityError::TooManySerials {
                count: listed.len(),
                max: MAX_SERIALS_PER_NODE,
            });
        }
        let mut wanted = vec![presented_serial.clone()];
        wanted.extend(listed.iter().filter_map(|s| s.as_ref().ok().cloned()));
        let mut found: BTreeMap<String, (CertificateRecord, Option<NodeIdentity>)> = self
            .store
            .certificates_by_serial(&wanted, now)
            .await?
            .into_iter()
            .map(|(record, identity)| (record.serial.clone(), (record, identity)))
            .collect();
        let (record, registered) = match found.remove(&presented_serial) {
            Some((record, registered)) => (Some(record), registered),
            None => (None, None),
        };
        let record = recorded_as_presented(record, presented_serial, presented)?;
        let actor = format!("cert:{}", record.serial);
        let (public_key, key_type) = public_key_of(presented)?;
        // Every certificate of a node shares its identity.
        let identity = match registered {
            Some(identity) => identity,
            None => {
                let node: NodeName =
                    record
                        .node
                        .parse()
                        .map_err(|e: crate::names::NameError| Fault::Corrupt {
                            what: format!("the node of certificate {}: {e}", record.serial),
                        })?;
                NodeIdentity::new(node, Vec::new(), Vec::new())
            }
        };
        // Signed first, then recorded together: one commit, and all or none.
        let mut renewed = vec![
            self.sign_renewal(&record, Some(&identity), &public_key, key_type, &actor, now)
                .await?,
        ];
        for serial in listed {
            let serial = serial?;
            let sibling = found
                .get(&serial)
                .map(|(sibling, _)| sibling)
                .filter(|c| c.node == record.node)
                .ok_or_else(|| AuthorityError::UnknownSerial {
                    serial: serial.clone(),
                })?;
            match sibling.status {
                CertificateStatus::Valid => {}
                CertificateStatus::Revoked => {
                    return Err(AuthorityError::ClientCertificateRevoked { serial })
                }
                CertificateStatus::Expired => {
                    return Err(AuthorityError::ClientCertificateExpired {
                        not_after: sibling.not_after,
                    })
                }
            }
            let der = pki::pem_certificates(&sibling.pem)?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (public_key, key_type) = public_key_of(&der)?;
            renewed.push(
                self.sign_renewal(sibling, Some(&identity), &public_key, key_type, &actor, now)
                    .await?,
            );
        }
        self.record(renewed).await
    }
}
