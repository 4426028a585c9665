// A minimal private PKI for a site's Data Transfer Nodes: one Ed25519 CA per site, and Ed25519
// endpoint certificates that the CA issues for daemons and users (usable as TLS server and client).
//
// Files are PEM: keys are PKCS#8 written with mode 0600, certificates mode 0644. Nothing is ever
// overwritten (kAlreadyExists names the file).
//
// Thread-safety: free functions without shared state; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "pororoca/status.h"

namespace pororoca::pki {

// Creates `dir` (mode 0700) if missing and writes dir/ca.key and dir/ca.crt: a self-signed CA
// certificate with CN=name, basicConstraints critical CA:TRUE, keyUsage critical keyCertSign,cRLSign
// and a subjectKeyIdentifier, valid for `days`.
Status CreateAuthority(const std::string& dir, const std::string& name, int days);

struct IssueOptions {
  // Validity relative to now, in seconds. not_after defaults to days * 86400. Tests build an expired
  // certificate with e.g. {-7200, -3600}.
  int64_t not_before_offset_s = -60;
  std::optional<int64_t> not_after_offset_s;
};

// Issues an endpoint certificate signed by the CA in ca_dir (ca.key, ca.crt): fresh Ed25519 key,
// CN=endpoint_name, SAN DNS:endpoint_name, basicConstraints critical CA:FALSE, keyUsage critical
// digitalSignature, extKeyUsage serverAuth+clientAuth, subject/authority key identifiers and a random
// 128-bit serial. endpoint_name must be 1..64 chars of [A-Za-z0-9._-] (kInvalidArgument otherwise).
Status IssueEndpoint(const std::string& ca_dir, const std::string& endpoint_name, const std::string& out_key,
                     const std::string& out_crt, int days, const IssueOptions& opts = {});

// Issues an endpoint certificate for the public key of a PEM certificate signing request, so that
// the endpoint's private key never leaves the endpoint. The request's self-signature must verify
// (the requester holds the key) and its key must be Ed25519. Nothing else in it is used: CN and SAN
// come from endpoint_name, and the extensions, serial and validity are those of IssueEndpoint.
// Errors: kInvalidArgument for a bad name or request (naming the file), kNotFound for a missing CA
// or request file, kAlreadyExists if out_crt exists.
Status IssueEndpointFromCsr(const std::string& ca_dir, const std::string& csr_file,
                            const std::string& endpoint_name, const std::string& out_crt, int days,
                            const IssueOptions& opts = {});

// Writes out_csr (mode 0644, never overwritten): a PEM certificate signing request with subject
// CN=endpoint_name, signed by the Ed25519 key in key_file, for IssueEndpointFromCsr at the CA. If
// key_file does not exist, a fresh Ed25519 key is written there first (mode 0600) and removed again
// if the request cannot be written.
Status WriteCsr(const std::string& key_file, const std::string& endpoint_name, const std::string& out_csr);

// True for a name IssueEndpoint accepts.
bool ValidEndpointName(const std::string& name);

// Subject CN of a PEM certificate.
Result<std::string> CertCommonName(const std::string& crt_file);

// Lowercase hex SHA-256 of the certificate's DER SubjectPublicKeyInfo: the public-key pin, equal to
// transport::TlsStream::peer_cert_sha256() for a peer presenting this certificate.
Result<std::string> PublicKeyPinFromCert(const std::string& crt_file);

}  // namespace pororoca::pki
