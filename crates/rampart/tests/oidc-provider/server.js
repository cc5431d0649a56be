// A real OpenID provider for Rampart's external-login tests (crates/rampart/tests/it/oidc.rs):
// panva's oidc-provider with three clients, two test users and a minimal login page that
// the tests drive over plain HTTP. scripts/test starts it:
//
//   node server.js <port>
//
// and exports RAMPART_TEST_OIDC_ISSUER=http://127.0.0.1:<port>. Test-only: the cookie key,
// the client secrets and the passwords are in this file on purpose.
//
// Clients (redirect URIs under the tests' public URL https://api.example.test/auth):
// - rampart-test       client_secret_basic, provider name `test`
// - rampart-post       client_secret_post,  provider name `post`
// - rampart-wrong-aud  client_secret_basic, provider name `wrongaud`; its ID tokens are
//   deliberately re-signed (with the provider's own key) for another audience, so that
//   the gateway's audience check meets a correctly signed token that is not for it.
//
// Users (login form: `login` and `password`):
// - alice / alice-password  email alice@example.com, email_verified true
// - bob   / bob-password    email bob@example.com,   email_verified false
// - carol / carol-password  no e-mail; preferred_username "alice" (a taken name)

import { createServer } from 'node:http';
import { generateKeyPairSync, sign } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const base = 'https://api.example.test/auth/oidc';

const users = {
  alice: {
    password: 'alice-password',
    claims: {
      sub: 'ext-alice', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', name: 'Alice Example',
    },
  },
  bob: {
    password: 'bob-password',
    claims: {
      sub: 'ext-bob', email: 'bob@example.com', email_verified: false, preferred_username: 'bob', name: 'Bob Example',
    },
  },
  carol: {
    password: 'carol-password',
    claims: { sub: 'ext-carol', preferred_username: 'alice', name: 'Carol Example' },
  },
};
const bySub = Object.fromEntries(Object.values(users).map((u) => [u.claims.sub, u]));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const client = (id, method, name) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  token_endpoint_auth_method: method,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: [`${base}/${name}/callback`],
});

const provider = new Provider(issuer, {
  clients: [
    client('rampart-test', 'client_secret_basic', 'test'),
    client('rampart-post', 'client_secret_post', 'post'),
    client('rampart-wrong-aud', 'client_secret_basic', 'wrongaud'),
  ],
  async findAccount(_ctx, sub) {
    const user = bySub[sub];
    if (!user) return undefined;
    return { accountId: sub, async claims() { return { ...user.claims }; } };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  // As most hosted providers do: the requested claims go into the ID token too,
  // not only to the userinfo endpoint.
  conformIdTokenClaims: false,
  cookies: { keys: ['rampart-test-only-cookie-key'] },
  jwks: { keys: [signingJwk] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
});

// The misbehaving client: its ID tokens name another audience, signed properly.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/token' || ctx.oidc?.client?.clientId !== 'rampart-wrong-aud') return;
  const token = ctx.body?.id_token;
  if (typeof token !== 'string') return;
  const [header, payload] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  claims.aud = 'someone-else';
  const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  ctx.body = { ...ctx.body, id_token: `${input}.${signature}` };
});

const page = (uid, message) => `<!doctype html><title>Sign in</title>
<p>${message}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login"><input name="password" type="password"><button>Sign in</button>
</form>
<form method="post" action="/interaction/${uid}/abort"><button>Cancel</button></form>`;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('body too large');
  }
  return new URLSearchParams(body);
}

// The login page: one form; a right password signs in and consents to the
// requested scopes at once (the tests have no use for a consent page).
async function interaction(req, res) {
  const [, , uid, action] = new URL(req.url, issuer).pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !action) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(uid, 'Sign in'));
    return;
  }
  if (req.method === 'POST' && action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the user cancelled',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const user = users[form.get('login')];
    if (!user || user.password !== form.get('password')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page(uid, 'Wrong login or password'));
      return;
    }
    const grant = new provider.Grant({ accountId: user.claims.sub, clientId: details.params.client_id });
    grant.addOIDCScope(String(details.params.scope));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, {
      login: { accountId: user.claims.sub },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(405).end();
}

const handler = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction failed:', err.message);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}\n`);
    });
    return;
  }
  handler(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider test issuer ${issuer}`);
});
