#!/usr/bin/env node
// Compiles every .sol file under contracts/ (recursively) with the pinned solc-js and writes
// one artifact per contract to contracts/artifacts/<ContractName>.json.
//
// Usage: node contracts/compile.js [--check]
//   --check  compile in memory and exit 1 if any committed artifact differs (stale).
// The solcjs CLI truncates piped output, so this calls require('solc').compile directly.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const solc = require('solc');

const CONTRACTS_DIR = __dirname;
const ARTIFACTS_DIR = path.join(CONTRACTS_DIR, 'artifacts');
const SKIP_DIRS = new Set(['artifacts', 'node_modules']);

const SETTINGS = {
  evmVersion: 'prague',
  optimizer: { enabled: true, runs: 200 },
  viaIR: false,
  outputSelection: {
    '*': {
      '*': [
        'abi',
        'evm.bytecode.object',
        'evm.bytecode.linkReferences',
        'evm.deployedBytecode.object',
        'evm.deployedBytecode.linkReferences',
      ],
    },
  },
};

function findSources(dir) {
  const found = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) found.push(...findSources(full));
    } else if (entry.isFile() && entry.name.endsWith('.sol')) {
      found.push(full);
    }
  }
  return found.sort();
}

function sha256(text) {
  return crypto.createHash('sha256').update(text).digest('hex');
}

function buildArtifacts() {
  const files = findSources(CONTRACTS_DIR);
  if (files.length === 0) {
    console.error(`compile: no .sol files under ${CONTRACTS_DIR}`);
    process.exit(1);
  }
  const sources = {};
  for (const file of files) {
    // Source units are named relative to contracts/ with forward slashes, so imports like
    // "./Registry.sol" and "../Task.sol" resolve and artifacts do not depend on the checkout path.
    const unit = path.relative(CONTRACTS_DIR, file).split(path.sep).join('/');
    sources[unit] = { content: fs.readFileSync(file, 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));

  const diagnostics = output.errors || [];
  const errors = diagnostics.filter((d) => d.severity === 'error');
  for (const d of diagnostics) {
    if (d.severity !== 'error') console.error(d.formattedMessage || d.message);
  }
  if (errors.length > 0) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    console.error(`compile: ${errors.length} error(s); no artifacts written`);
    process.exit(1);
  }

  const artifacts = {};
  for (const [unit, contracts] of Object.entries(output.contracts || {})) {
    for (const [name, compiled] of Object.entries(contracts)) {
      if (artifacts[name]) {
        console.error(`compile: contract name ${name} is defined in both ${artifacts[name].sourceName} and ${unit}; rename one`);
        process.exit(1);
      }
      artifacts[name] = {
        contractName: name,
        sourceName: unit,
        sourceHash: 'sha256:' + sha256(sources[unit].content),
        compiler: { name: 'solc-js', version: solc.version() },
        settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer, viaIR: SETTINGS.viaIR },
        abi: compiled.abi,
        bytecode: '0x' + compiled.evm.bytecode.object,
        deployedBytecode: '0x' + compiled.evm.deployedBytecode.object,
        // Library placeholders ("__$<hash>$__") in bytecode: { sourceName: { Library: [{ start, length }] } },
        // byte offsets into the creation code; the deployer writes the library address there.
        linkReferences: compiled.evm.bytecode.linkReferences || {},
      };
    }
  }
  return artifacts;
}

function serialize(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main() {
  const check = process.argv.includes('--check');
  const artifacts = buildArtifacts();
  const names = Object.keys(artifacts).sort();
  const existing = fs.existsSync(ARTIFACTS_DIR)
    ? fs.readdirSync(ARTIFACTS_DIR).filter((f) => f.endsWith('.json'))
    : [];
  const expected = new Set(names.map((n) => `${n}.json`));

  if (check) {
    const stale = [];
    for (const name of names) {
      const file = path.join(ARTIFACTS_DIR, `${name}.json`);
      if (!fs.existsSync(file)) stale.push(`${name}.json (missing)`);
      else if (fs.readFileSync(file, 'utf8') !== serialize(artifacts[name])) stale.push(`${name}.json (differs)`);
    }
    for (const f of existing) if (!expected.has(f)) stale.push(`${f} (no longer produced by any source)`);
    if (stale.length > 0) {
      console.error('compile --check: stale artifacts: ' + stale.join(', '));
      console.error('fix: run `node contracts/compile.js` and commit contracts/artifacts/');
      process.exit(1);
    }
    console.log(`compile --check: ${names.length} artifacts up to date (solc ${solc.version()})`);
    return;
  }

  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  for (const f of existing) if (!expected.has(f)) fs.unlinkSync(path.join(ARTIFACTS_DIR, f));
  for (const name of names) {
    const file = path.join(ARTIFACTS_DIR, `${name}.json`);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, serialize(artifacts[name]));
    fs.renameSync(tmp, file);
  }
  console.log(`compile: wrote ${names.length} artifacts to ${path.relative(process.cwd(), ARTIFACTS_DIR) || '.'} (solc ${solc.version()})`);
}

main();
