import Bowser from 'bowser';
import ipaddr from 'ipaddr.js';
import type { Device } from './session';

export const UNKNOWN = 'Unknown';

// the families bowser knows by name: its catch-all rule would otherwise take any text before a "/" in the header,
// which a client chooses, of any length, as a browser's name
const BROWSERS = new Set<string>(Object.values(Bowser.BROWSER_MAP));
const SYSTEMS = new Set<string>(Object.values(Bowser.OS_MAP));

// a family as bowser names it, then the first number of its version: "Chrome 131", "Windows 10", "macOS 10"
function familyAndMajor(name: string | undefined, version: string | undefined, known: Set<string>): string {
  if (!name || !known.has(name)) return UNKNOWN;
  const major = /\d+/.exec(version ?? '')?.[0];
  // a version is a few digits; anything longer is not one worth keeping
  return major === undefined || major.length > 6 ? name : `${name} ${major}`;
}

/**
 * What GET /sessions shows of a login's client, and nothing more precise: the browser and OS family with their
 * major version (the raw User-Agent is not kept) and the address truncated by `truncateIp`.
 */
export function describeDevice(userAgent: string | undefined, ip: string | undefined): Device {
  let browser = UNKNOWN;
  let os = UNKNOWN;
  if (userAgent) {
    const parsed = Bowser.parse(userAgent);
    browser = familyAndMajor(parsed.browser.name, parsed.browser.version, BROWSERS);
    // Windows names its release in versionName ("10" for "NT 10.0"); macOS names it in words ("Catalina")
    const osVersion = /^\d/.test(parsed.os.versionName ?? '') ? parsed.os.versionName : parsed.os.version;
    os = familyAndMajor(parsed.os.name, osVersion, SYSTEMS);
  }
  return { browser, os, ip: truncateIp(ip) };
}

/**
 * The network a client is in, not the client: IPv4 to its /24 (203.0.113.0), IPv6 to its /48 (2001:db8:1::).
 * An IPv4-mapped IPv6 address (what a dual-stack listener reports for an IPv4 client) is treated as IPv4.
 */
export function truncateIp(ip: string | undefined): string {
  if (ip === undefined || !ipaddr.isValid(ip)) return UNKNOWN;
  const address = ipaddr.process(ip);
  const bytes = address.toByteArray();
  const keep = address.kind() === 'ipv4' ? 3 : 6;
  return ipaddr.fromByteArray(bytes.map((byte, i) => (i < keep ? byte : 0))).toString();
}
