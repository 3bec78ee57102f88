// nextCursor on its own: `Link` headers (RFC 8288) in the forms a proxy or another
// server may send, beyond the one taskapp writes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { nextCursor } from "@taskapp/client";

test("nextCursor reads the cursor of the rel=next link", () => {
  const url = "http://api.example/api/u/tasks?limit=2&priority=4&priority=5&cursor=abc%2B1";
  assert.equal(nextCursor(`<${url}>; rel="next"`), "abc+1");
  assert.equal(nextCursor(`<http://a/x?cursor=p>; rel=prev, <${url}>; rel=next`), "abc+1");
  assert.equal(nextCursor(`<${url}>; title="a; b"; rel="last next"`), "abc+1");
  assert.equal(nextCursor(`</api/u/tasks?cursor=rel>; REL="Next"`), "rel");
});

test("nextCursor is null without a next link", () => {
  assert.equal(nextCursor(null), null);
  assert.equal(nextCursor(""), null);
  assert.equal(nextCursor('<http://a/x?cursor=p>; rel="prev"'), null);
  assert.equal(nextCursor('<http://a/x?cursor=p>; rel="nextpage"'), null);
});
