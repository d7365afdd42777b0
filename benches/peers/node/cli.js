// Shared command line for the Node peers: --listen ADDR [--workers 1] [--verbose].
// Node runs JavaScript on one thread, so only --workers 1 is accepted (an error,
// not a silent ignore, if a script passes the same --workers N to every peer).

export function parseArgs(name, argv = process.argv.slice(2)) {
  const usage =
    `usage: node ${name} --listen ADDR [--workers 1] [--verbose]\n` +
    '  --listen ADDR   address to bind (default 127.0.0.1:9300; port 0 picks one)\n' +
    '  --workers 1     accepted for symmetry with the Rust peers; Node is single-threaded\n' +
    '  --verbose       print per-connection errors to stderr';
  const fail = (msg) => {
    console.error(`${name}: ${msg}\n${usage}`);
    process.exit(2);
  };
  const args = { host: '127.0.0.1', port: 9300, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let [flag, inline] = argv[i].startsWith('--') && argv[i].includes('=')
      ? [argv[i].slice(0, argv[i].indexOf('=')), argv[i].slice(argv[i].indexOf('=') + 1)]
      : [argv[i], undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--listen': {
        const addr = value();
        // 127.0.0.1:9300, [::1]:9300, localhost:9300
        const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
        if (!m) fail(`--listen wants HOST:PORT, got ${JSON.stringify(addr)}`);
        args.host = m[1];
        args.port = Number(m[2]);
        break;
      }
      case '--workers': {
        const v = value();
        if (v !== '1') fail(`Node is single-threaded: only --workers 1 is supported, got ${JSON.stringify(v)}`);
        break;
      }
      case '--verbose':
      case '-v':
        args.verbose = true;
        break;
      case '--help':
      case '-h':
        console.log(usage);
        process.exit(0);
      default:
        fail(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  return args;
}

// Prints "NAME: listening on HOST:PORT" once the server is bound; scripts wait for it.
export function announce(name, wss) {
  const a = wss.address();
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  console.log(`${name}: listening on ${host}:${a.port}`);
}
