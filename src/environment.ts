// The first module the server loads: the environment must be complete before tracing decides whether to start.
import dotenv from 'dotenv';

// as in the tutorial: a .env file outside production; in production the environment is the only source
if (process.env.NODE_ENV !== 'production') dotenv.config({ quiet: true });
