//! HTTP handlers, one module per resource: [`accounts`] (sign-up, email
//! verification, login, passwords), [`sessions`] (refresh, sign-out, `me`,
//! step-up), [`admin`] (roles, users, audit, bootstrap), [`nodes`]
//! (enrollment), [`passkeys`] (WebAuthn ceremonies) and [`oauth`] (sign-in
//! with OAuth / OpenID Connect providers). Handlers parse and authorise;
//! storage goes through [`crate::store`], which holds their SQL.

pub mod accounts;
pub mod admin;
pub mod nodes;
pub mod oauth;
pub mod passkeys;
pub mod sessions;
