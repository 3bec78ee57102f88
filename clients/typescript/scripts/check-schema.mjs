// Fail when src/schema.d.ts is not what `npm run generate` makes from openapi.json now.
//
// It runs the generate script's own command with the output sent to a temporary
// file, and compares the two files.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const committed = "src/schema.d.ts";
const scripts = JSON.parse(readFileSync("package.json", "utf8")).scripts;
const [command, ...args] = scripts.generate.split(" ");
const output = args.indexOf("-o") + 1;
if (command !== "openapi-typescript" || args[output] !== committed) {
  throw new Error(`the generate script must be "openapi-typescript ... -o ${committed}"`);
}

const folder = mkdtempSync(join(tmpdir(), "taskapp-client-"));
try {
  const fresh = join(folder, "schema.d.ts");
  args[output] = fresh;
  // Quiet unless it fails: a failure's message carries what it printed.
  execFileSync(join("node_modules", ".bin", command), args, { stdio: "pipe" });
  if (readFileSync(fresh, "utf8") !== readFileSync(committed, "utf8")) {
    console.error(
      `clients/typescript/${committed} is stale against openapi.json: ` +
        "run `make client` and commit the result.",
    );
    process.exitCode = 1;
  }
} finally {
  rmSync(folder, { recursive: true, force: true });
}
