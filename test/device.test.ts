import { describeDevice, truncateIp } from '../src/device';

describe('truncateIp', () => {
  it.each([
    ['203.0.113.77', '203.0.113.0'],
    ['10.1.2.255', '10.1.2.0'],
    ['::ffff:127.0.0.1', '127.0.0.0'],
    ['::ffff:203.0.113.77', '203.0.113.0'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1::'],
    ['2001:0db8:0001:ffff::1', '2001:db8:1::'],
    ['::1', '::'],
    ['fe80::1%eth0', 'fe80::'],
  ])('when the address is %s, then only %s is kept', (ip, kept) => {
    expect(truncateIp(ip)).toBe(kept);
  });

  it.each([undefined, '', 'not-an-ip', '999.1.1.1'])('when the address is %p, then it is "Unknown"', (ip) => {
    expect(truncateIp(ip)).toBe('Unknown');
  });
});

describe('describeDevice', () => {
  it.each([
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36', 'Chrome 131', 'Linux'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0', 'Firefox 133', 'Windows 10'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15', 'Safari 17', 'macOS 10'],
    ['Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36', 'Chrome 131', 'Android 14'],
    ['curl/8.5.0', 'Unknown', 'Unknown'],
    [undefined, 'Unknown', 'Unknown'],
    ['', 'Unknown', 'Unknown'],
  ])('when the User-Agent is %p, then browser %s on %s', (userAgent, browser, os) => {
    expect(describeDevice(userAgent, '198.51.100.7')).toEqual({ browser, os, ip: '198.51.100.0' });
  });

  it('when the User-Agent names no browser bowser knows, then "Unknown": a client cannot choose the text kept', () => {
    expect(describeDevice(`${'A'.repeat(15_000)}/1 (X11; Linux x86_64)`, undefined).browser).toBe('Unknown');
    expect(describeDevice('MyOwnBrowserName/9 <b>', undefined).browser).toBe('Unknown');
  });

  it('when the User-Agent is long or odd, then only the families and major versions are kept, never the raw header', () => {
    const userAgent = `Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.6778.85 Safari/537.36 secret-token-${'x'.repeat(2000)}`;

    const device = describeDevice(userAgent, undefined);

    expect(JSON.stringify(device)).not.toContain('secret-token');
    expect(JSON.stringify(device).length).toBeLessThan(120);
  });
});
