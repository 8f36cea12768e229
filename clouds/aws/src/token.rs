//! The bearer token for an EKS cluster's API server, as `aws eks get-token` makes it: an STS
//! GetCallerIdentity request presigned for 60 seconds, naming the cluster in the signed
//! `x-k8s-aws-id` header; the API server's authenticator replays it to learn who calls. It is
//! short-lived and made when needed: nothing long-lived is stored.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use cellplane_cloud::CloudError;

const PREFIX: &str = "k8s-aws-v1.";
const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// What the authenticator accepts (it refuses a presigned URL valid for longer than 15 minutes).
const LIFETIME: Duration = Duration::from_secs(60);

/// The token for `cluster`, signed with `credentials` in `region` at `now`.
pub fn eks_token(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String, CloudError> {
    let url = format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| CloudError::Invalid(format!("signing the EKS token: {e}")))?
        .into();
    let headers = [(CLUSTER_HEADER, cluster)];
    let signable = SignableRequest::new("GET", &url, headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| CloudError::Invalid(format!("signing the EKS token: {e}")))?;
    let (instructions, _) =
        sign(signable, &params).map_err(|e| CloudError::Invalid(format!("signing the EKS token: {e}")))?.into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .header(CLUSTER_HEADER, cluster)
        .body(())
        .map_err(|e| CloudError::Invalid(format!("signing the EKS token: {e}")))?;
    instructions.apply_to_request_http1x(&mut request);
    let presigned = request.uri().to_string();
    Ok(format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_a_presigned_get_caller_identity_for_the_cluster() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = eks_token(&credentials, "eu-west-1", "eu-1", now).unwrap();
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("the k8s-aws-v1. prefix");
        assert!(!encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'), "base64url, unpadded");
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Fsts%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        // Another cluster, another signature: the header is signed.
        let other = eks_token(&credentials, "eu-west-1", "eu-2", now).unwrap();
        assert_ne!(token, other);
    }
}
