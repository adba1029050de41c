// The framework's ceiling, for the benchmark only: bare Express 5 answering GET /user with the same JSON a
// logged-in user gets, no session, no middleware.
const express = require('express');

const app = express();
app.get('/user', (_req, res) => {
  res.json({ info: 'User profile info', data: { name: 'bench' } });
});

const port = process.env.APPLICATION_PORT || 7501;
app.listen(port, () => {
  console.log('Server listening at http://localhost:%s', port);
});
