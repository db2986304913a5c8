// Plays the WeCom platform with Tencent's own @wecom/crypto for the interoperability tests.
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout ({"error": ...} on failure).
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { decrypt, encrypt, getSignature } from '@wecom/crypto';

function randomPrefix(command) {
  return command.random === undefined ? randomBytes(16) : Buffer.from(command.random, 'base64');
}

// The reply envelope is tiny and machine-made; a regex per field is how WeCom's own samples read it too.
function field(xml, name) {
  const match = new RegExp(`<${name}>(?:<!\\[CDATA\\[([\\s\\S]*?)\\]\\]>|([^<]*))</${name}>`).exec(xml);
  if (!match) throw new Error(`reply lacks <${name}>`);
  return match[1] ?? match[2];
}

const handlers = {
  // GET /callback?msg_signature=..&timestamp=..&nonce=..&echostr=.. as the platform sends it.
  url_verification(c) {
    const echostr = encrypt(c.key, c.echo, c.receive_id, randomPrefix(c));
    return { echostr, msg_signature: getSignature(c.token, c.timestamp, c.nonce, echostr) };
  },
  // POST /callback: the envelope body and its query-string signature.
  callback(c) {
    const ciphertext = encrypt(c.key, c.message, c.receive_id, randomPrefix(c));
    const body = `<xml><ToUserName><![CDATA[${c.receive_id}]]></ToUserName>`
      + `<Encrypt><![CDATA[${ciphertext}]]></Encrypt><AgentID><![CDATA[${c.agent_id ?? ''}]]></AgentID></xml>`;
    return { body, encrypt: ciphertext, msg_signature: getSignature(c.token, c.timestamp, c.nonce, ciphertext) };
  },
  // What the platform does with a passive reply: check its signature, then decrypt it.
  open_reply(c) {
    const ciphertext = field(c.reply, 'Encrypt');
    const timestamp = field(c.reply, 'TimeStamp');
    const nonce = field(c.reply, 'Nonce');
    const signature = field(c.reply, 'MsgSignature');
    const expected = getSignature(c.token, timestamp, nonce, ciphertext);
    const { message, id } = decrypt(c.key, ciphertext);
    return { signature_ok: expected === signature, timestamp, nonce, message, id };
  },
  sign(c) {
    return { signature: getSignature(c.token, c.timestamp, c.nonce, c.encrypt) };
  },
  encrypt(c) {
    return { encrypted: encrypt(c.key, c.message, c.receive_id, randomPrefix(c)) };
  },
  decrypt(c) {
    const { message, id, random } = decrypt(c.key, c.encrypted);
    return { message, id, random: random.toString('base64') };
  },
};

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    const command = JSON.parse(line);
    const handler = handlers[command.op];
    if (!handler) throw new Error(`unknown op ${command.op}`);
    answer = handler(command);
  } catch (error) {
    answer = { error: String(error && error.message ? error.message : error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
