// A real Better Auth server for taskapp's tests: email and password sign-in, the
// JWT plugin, the memory adapter, on a free 127.0.0.1 port. It prints one JSON line,
// {"baseURL": ...}, once it is listening; the tests read it to find the server.
//
// Settings (environment):
//   BETTER_AUTH_SECRET  Better Auth's secret (tests/better_auth.py always sets it)
//   ALG                 the signing algorithm, jwks.keyPairConfig.alg (default EdDSA)
//   CUSTOM_PAYLOAD      "1": a definePayload that leaves out most of the user object
//   TRUSTED_ORIGINS     comma-separated origins allowed besides baseURL
//   COOKIE_CACHE        "jwt": session.cookieCache with strategy "jwt", so the
//                       better-auth.session_data cookie is an HS256 JWT signed with the secret
// Test-only route: POST /__test__/rotate mints a new signing key (rotation); the
// old ones stay listed, as after a rotation in a real deployment.
// GET /app serves app.html, the frontend of the browser test (tests/betterauth/e2e.mjs):
// a Next.js app lives on Better Auth's origin in a real deployment, so the page does too.
// GET /client/<name>.js serves the page the TypeScript client as built
// (clients/typescript/dist), and /client/openapi-fetch.js its one dependency.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { createJwk, jwt } from "better-auth/plugins/jwt";

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const baseURL = `http://127.0.0.1:${server.address().port}`;

const jwtOptions = { jwks: { keyPairConfig: { alg: process.env.ALG || "EdDSA" } } };
if (process.env.CUSTOM_PAYLOAD === "1") {
  jwtOptions.jwt = {
    definePayload: ({ user }) => ({ email: user.email, role: "member" }),
  };
}

const session = {};
if (process.env.COOKIE_CACHE === "jwt") {
  session.cookieCache = { enabled: true, strategy: "jwt" };
}

const auth = betterAuth({
  baseURL,
  secret: process.env.BETTER_AUTH_SECRET,
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  session,
  rateLimit: { enabled: false },
  trustedOrigins: (process.env.TRUSTED_ORIGINS || "").split(",").filter(Boolean),
  plugins: [jwt(jwtOptions)],
});

const handleAuth = toNodeHandler(auth);
const appPage = readFileSync(new URL("./app.html", import.meta.url));
const clientDir = new URL("../../clients/typescript/", import.meta.url);

/** The file behind a /client/ path, or null: only the built modules, never a path the URL makes up. */
function clientFile(pathname) {
  if (pathname === "/client/openapi-fetch.js") {
    return new URL("node_modules/openapi-fetch/dist/index.mjs", clientDir);
  }
  const name = /^\/client\/([a-z-]+\.js)$/.exec(pathname)?.[1];
  return name ? new URL(`dist/${name}`, clientDir) : null;
}

async function serveClient(file, res) {
  try {
    const body = await readFile(file);
    res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" });
    res.end(body);
  } catch {
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not built: run `make client`\n");
  }
}

async function rotate(res) {
  const key = await createJwk({ context: await auth.$context }, jwtOptions);
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ kid: key.id }));
}

server.on("request", (req, res) => {
  if (req.method === "POST" && req.url === "/__test__/rotate") {
    rotate(res).catch((error) => {
      res.writeHead(500);
      res.end(String(error));
    });
    return;
  }
  // The page reads its settings from the query string (?api=...): match the path only.
  const { pathname } = new URL(req.url, baseURL);
  if (req.method === "GET" && pathname === "/app") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(appPage);
    return;
  }
  const file = req.method === "GET" && clientFile(pathname);
  if (file) {
    serveClient(file, res);
    return;
  }
  handleAuth(req, res);
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
console.log(JSON.stringify({ baseURL }));
