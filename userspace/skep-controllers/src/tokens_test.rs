use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_api::delete::DeleteOptions;
use skep_tokens::{SigningKey, TokenSigner, Validator};

use super::*;
use crate::testing::{CONVERGE, Harness, Result, wait_for};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn issuer() -> Result<TokenIssuer> {
    Ok(TokenIssuer {
        signer: Arc::new(TokenSigner::new(ISSUER, SigningKey::generate()?)),
        root_ca_pem: CA.to_owned(),
    })
}

fn account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

fn token_secret(name: &str, account: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            annotations: Some(BTreeMap::from([(
                SERVICE_ACCOUNT_NAME_KEY.to_owned(),
                account.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(SERVICE_ACCOUNT_TOKEN_TYPE.into()),
        ..Secret::default()
    }
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

#[tokio::test]
async fn a_token_secret_is_filled_and_dies_with_its_service_account() -> Result<()> {
    let issuer = issuer()?;
    let validator = Validator::new(
        vec![ISSUER.to_owned()],
        vec![issuer.signer.key().public_key().clone()],
        vec![ISSUER.to_owned()],
    )
    .accept_legacy(true);
    let h = Harness::start_with_tokens(ControllerConfig::default(), Some(issuer)).await?;
    let sa = h.objects.create_typed(&account("builder"), "test").await?;
    let sa_uid = sa.metadata.uid.clone().unwrap_or_default();
    h.objects
        .create_typed(&token_secret("builder-token", "builder"), "test")
        .await?;

    let filled = wait_for("the token secret filled", CONVERGE, || async {
        let secret = h
            .objects
            .get_typed::<Secret>("team", "builder-token")
            .await?;
        Ok(data(&secret, TOKEN_KEY).is_some().then_some(secret))
    })
    .await?;
    assert_eq!(data(&filled, ROOT_CA_KEY).as_deref(), Some(CA));
    assert_eq!(data(&filled, NAMESPACE_KEY).as_deref(), Some("team"));
    let annotations = filled.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get(SERVICE_ACCOUNT_UID_KEY), Some(&sa_uid));
    // The token is a legacy token for the account and secret.
    let token = data(&filled, TOKEN_KEY).unwrap_or_default();
    let verified = validator
        .verify(&token, None, 0)?
        .ok_or("the token is not recognised")?;
    let skep_tokens::validate::VerifiedClaims::Legacy(claims) = verified.claims else {
        return Err("not a legacy token".into());
    };
    assert_eq!(claims.sub, "system:serviceaccount:team:builder");
    assert_eq!(claims.secret_name, "builder-token");
    assert_eq!(claims.service_account_uid, sa_uid);

    h.objects
        .delete_typed::<ServiceAccount>("team", "builder", &DeleteOptions::default())
        .await?;
    wait_for("the token secret deleted", CONVERGE, || async {
        let gone = h
            .objects
            .try_get_typed::<Secret>("team", "builder-token")
            .await?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_token_secret_for_a_missing_account_is_deleted() -> Result<()> {
    let h = Harness::start_with_tokens(ControllerConfig::default(), Some(issuer()?)).await?;
    h.objects
        .create_typed(&token_secret("orphan", "nobody"), "test")
        .await?;
    wait_for("the orphan token secret deleted", CONVERGE, || async {
        let gone = h
            .objects
            .try_get_typed::<Secret>("team", "orphan")
            .await?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    Ok(())
}
