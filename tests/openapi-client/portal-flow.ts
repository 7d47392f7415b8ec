// A sample portal flow written against the client types that
// openapi-typescript generates from our own /openapi.json (into
// api.d.ts beside this file, by tests/tests/openapi_client.rs): sign up,
// verify the address, sign in, enroll a device, list nodes, approve one as
// an operator, submit a task and read its id. If a route, a field or a
// status changes in the Rust code, this stops type-checking.
import type { paths } from "./api";

type Json<T> = T extends { content: { "application/json": infer B } } ? B : never;
type Body<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  requestBody?: infer R;
}
  ? Json<NonNullable<R>>
  : never;
type Reply<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: infer Rs;
}
  ? S extends keyof Rs
    ? Json<Rs[S]>
    : never
  : never;
type Problem = paths["/auth/login"]["post"]["responses"][401]["content"]["application/problem+json"];

// The one place that touches the network: a typed POST/GET.
declare function call<P extends keyof paths, M extends keyof paths[P], S extends number>(
  method: M,
  path: P,
  status: S,
  body?: Body<P, M>,
  bearer?: string,
): Promise<Reply<P, M, S> | Problem>;

function isProblem(v: unknown): v is Problem {
  return typeof v === "object" && v !== null && "code" in v && "type" in v;
}

export async function newDeviceOwner(email: string, password: string, verifyToken: string) {
  const signedUp = await call("post", "/auth/signup", 202, {
    email,
    password,
    display_name: "New owner",
  });
  if (isProblem(signedUp)) throw new Error(signedUp.code);
  const status: string = signedUp.status;

  const verified = await call("post", "/auth/verify-email", 200, { token: verifyToken, password });
  if (isProblem(verified)) throw new Error(verified.code);

  const login = await call("post", "/auth/login", 200, { email, password, client: "browser" });
  if (isProblem(login)) throw new Error(`${login.code}: ${login.detail ?? ""}`);
  const token: string = login.access_token;
  const kind: "Bearer" = login.token_type;

  const enrolled = await call("post", "/auth/nodes/enroll", 201, { node_id: "my-laptop", kind: "agent" }, token);
  if (isProblem(enrolled)) throw new Error(enrolled.code);
  const enrollment: string = enrolled.enrollment_token;
  const expires: string = enrolled.expires_at;

  const listed = await call("get", "/auth/nodes", 200, undefined, token);
  if (isProblem(listed)) throw new Error(listed.code);
  const states: ("token_pending" | "token_expired" | "redeemed")[] = listed.nodes.map((n) => n.state);

  return { status, kind, token, enrollment, expires, states };
}

export async function operatorApproves(operatorToken: string, nodeId: string) {
  const r = await call("post", "/mesh/nodes/{id}/approve", 200, undefined, operatorToken);
  if (isProblem(r)) throw new Error(r.code);
  return nodeId;
}

export async function submitTask(token: string, moduleDigest: string, inputDigest: string) {
  const submitted = await call(
    "post",
    "/mesh/tasks",
    201,
    {
      kind: "wasm",
      module: { digest: moduleDigest },
      input: { digest: inputDigest },
      timeout_ms: 30_000,
      resources: { memory_mb: 64, fuel: 1_000_000_000 },
    },
    token,
  );
  if (isProblem(submitted)) throw new Error(submitted.code);
  const id: string = submitted.task_id;
  const price: number = submitted.price;
  return { id, price };
}
