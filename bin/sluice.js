#!/usr/bin/env node
// The `sluice` command: the compiled CLI (npm run build:ts writes dist/).
require('../dist/src/cli/main.js');
