// Bare Express as bare.js, but served by our HTTP server (src/http-server.ts, compiled: the benchmark builds first),
// for the benchmark only: the framework's ceiling with the same HTTP server as ours, so the gap that is left is
// what the session costs.
const express = require('express');
const { createHttpServer } = require('../../../dist/http-server');

const app = express();
app.get('/user', (_req, res) => {
  res.json({ info: 'User profile info', data: { name: 'bench' } });
});

const port = process.env.APPLICATION_PORT || 7501;
createHttpServer(app).listen(port, () => {
  console.log('Server listening at http://localhost:%s', port);
});
