// The tutorial's server as it shipped, for the benchmark only: Express 4 (its package.json says ^4.17.1),
// express-session with its defaults and MemoryStore, cookie-parser, the three handlers, no hardening.
// The lines missing from the published text are filled in the obvious way (marked "restored").
const express = require('express4');
const session = require('express-session');
const cookieParser = require('cookie-parser');

const app = express();
// restored: the session configuration
app.use(
  session({
    secret: process.env.SESSION_SECRET || '8unto0n4oc7903zm',
    resave: false,
    saveUninitialized: false,
  }),
);
// restored
app.use(cookieParser());

const appUsr = {};

// restored: app.post("/login", ...) and its body
app.post('/login', (req, res) => {
  appUsr.name = req.query.name;
  req.session.user = appUsr;
  req.session.save();
  return res.status(201).json({ info: 'User logged in' });
});

app.get('/user', (req, res) => {
  if (req.session.user != null) {
    return res.json({ info: 'User profile info', data: req.session.user });
  } else {
    return res.status(200).json({ info: 'No data present in session' });
  }
});

// restored: app.post("/logout", ...) and req.session.destroy()
app.post('/logout', (req, res) => {
  req.session.destroy();
  return res.status(204).json({ info: 'User logged out' });
});

const port = process.env.APPLICATION_PORT || 7501;
app.listen(port, () => {
  console.log('Server listening at http://localhost:%s', port);
});
