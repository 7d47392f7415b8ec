// A local stand-in for GitHub's OAuth web flow and the two REST endpoints the
// relying party reads, speaking GitHub's protocol as documented
// (docs.github.com: "Authorizing OAuth apps", "Get the authenticated user",
// "List email addresses for the authenticated user"): for tests only.
//
//   GET  /login/oauth/authorize   client_id, redirect_uri, scope, state,
//                                 code_challenge(+_method=S256); the user is
//                                 chosen with `login=` (GitHub's page would
//                                 ask); 302 to redirect_uri?code&state
//   POST /login/oauth/access_token  form: client_id, client_secret, code,
//                                 redirect_uri, code_verifier; JSON with
//                                 Accept: application/json; failures are 200
//                                 with {"error": "bad_verification_code"} as
//                                 on GitHub
//   GET  /api/user, /api/user/emails  Authorization: Bearer <token>
//
// Logins starting with `unverified-` have only an unverified email; others a
// verified primary one. The numeric id is derived from the login.
import * as crypto from 'node:crypto';

export function github({ clientId, clientSecret, redirectUris }) {
  const codes = new Map();
  const tokens = new Map();
  const userOf = (login) => ({
    login,
    id: Number.parseInt(crypto.createHash('sha256').update(login).digest('hex').slice(0, 12), 16),
    name: `Test ${login}`,
    email: null,
  });
  const json = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const readBody = (req) => new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
  });
  const b64url = (buf) => buf.toString('base64url');

  return async (req, res) => {
    const url = new URL(req.url, 'http://local');
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      const q = url.searchParams;
      const login = q.get('login');
      if (q.get('client_id') !== clientId || !redirectUris.includes(q.get('redirect_uri'))) {
        return json(res, 400, { error: 'redirect_uri_mismatch' });
      }
      if (!login) return json(res, 400, { error: 'login_required', hint: 'add &login=NAME' });
      const code = crypto.randomBytes(10).toString('hex');
      codes.set(code, {
        login,
        redirectUri: q.get('redirect_uri'),
        challenge: q.get('code_challenge'),
        method: q.get('code_challenge_method'),
      });
      const back = new URL(q.get('redirect_uri'));
      back.searchParams.set('code', code);
      if (q.get('state')) back.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      const form = new URLSearchParams(await readBody(req));
      const grant = codes.get(form.get('code'));
      codes.delete(form.get('code'));
      const bad = { error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.' };
      if (form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret) {
        return json(res, 200, { error: 'incorrect_client_credentials' });
      }
      if (!grant || grant.redirectUri !== form.get('redirect_uri')) return json(res, 200, bad);
      if (grant.challenge) {
        const verifier = form.get('code_verifier') || '';
        const want = grant.method === 'S256'
          ? b64url(crypto.createHash('sha256').update(verifier).digest())
          : verifier;
        if (want !== grant.challenge) return json(res, 200, bad);
      }
      const token = `gho_${crypto.randomBytes(18).toString('hex')}`;
      tokens.set(token, grant.login);
      return json(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
    }
    if (req.method === 'GET' && url.pathname.startsWith('/api/user')) {
      const auth = req.headers.authorization || '';
      const login = tokens.get(auth.replace(/^(Bearer|token) /, ''));
      if (!login) return json(res, 401, { message: 'Bad credentials' });
      if (!req.headers['user-agent']) return json(res, 403, { message: 'User-Agent required' });
      if (url.pathname === '/api/user') return json(res, 200, userOf(login));
      if (url.pathname === '/api/user/emails') {
        const verified = !login.startsWith('unverified-');
        return json(res, 200, [
          { email: `${login}@users.noreply.github.test`, primary: false, verified: true, visibility: null },
          { email: `${login}@example.com`, primary: true, verified, visibility: 'private' },
        ].filter((e) => verified || e.primary));
      }
    }
    return json(res, 404, { message: 'Not Found' });
  };
}
