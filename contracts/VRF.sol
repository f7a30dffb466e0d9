// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title VRF: RSA-FDH-VRF-SHA256 verification (RFC 9381 section 4), VRF key certificates and
/// committee sortition. The byte-exact twin of protocol/vrf.py, protocol/keycert.py and
/// protocol/sortition.py; read those docstrings for the derivations.
/// @dev Every function but verifySeat is internal, so it is compiled into the caller
/// (the Registry inlines verifyKeyCertificate). verifySeat is external: the deployed
/// library is linked into Task like RewardMath, since inlining it would add ~1.7 KB, past the
/// 24 KiB code limit, where linking leaves 1.6 KB (22,922 bytes). The modexp
/// precompile (0x05) does the RSA arithmetic; SHA-256 (0x02) does MGF1 and proof_to_hash.
library VRF {
    uint256 internal constant PUBLIC_EXPONENT = 65537;
    uint256 internal constant MIN_MODULUS_BYTES = 128;
    uint256 internal constant MAX_MODULUS_BYTES = 512;
    uint256 internal constant KEY_BYTES = 256; // registered keys: exactly 2048 bits
    uint256 internal constant CHALLENGE_COUNT = 9;
    uint256 internal constant CHALLENGE_BLOCKS = 9; // 288 hash bytes per challenge, reduced mod n
    uint256 internal constant CERTIFICATE_BYTES = CHALLENGE_COUNT * KEY_BYTES;

    bytes internal constant CERTIFICATE_DOMAIN = "fl-node/vrf-key-certificate/perm/v1";
    bytes internal constant SEED_DOMAIN = "fl-node/sortition/seed/v1";

    /// Odd primes below ALPHA = 2^13 (1027 of them), two big-endian bytes each; generated from
    /// protocol.keycert.SMALL_PRIMES and checked against it by tests/contracts/test_vrf_onchain.py.
    bytes internal constant SMALL_PRIMES =
        hex"000300050007000b000d001100130017001d001f00250029002b002f0035003b003d004300470049004f005300590061"
        hex"00650067006b006d0071007f00830089008b00950097009d00a300a700ad00b300b500bf00c100c500c700d300df00e3"
        hex"00e500e900ef00f100fb01010107010d010f01150119011b0125013301370139013d014b0151015b015d01610167016f"
        hex"0175017b017f0185018d0191019901a301a501af01b101b701bb01c101c901cd01cf01d301df01e701eb01f301f701fd"
        hex"0209020b021d0223022d02330239023b0241024b025102570259025f02650269026b0277028102830287028d02930295"
        hex"02a102a502ab02b302bd02c502cf02d702dd02e302e702ef02f502f9030103050313031d0329032b03350337033b033d"
        hex"034703550359035b035f036d037103730377038b038f039703a103a903ad03b303b903c703cb03d103d703df03e503f1"
        hex"03f503fb03fd04070409040f0419041b04250427042d043f044304450449044f0455045d04630469047f0481048b0493"
        hex"049d04a304a904b104bd04c104c704cd04cf04d504e104eb04fd04ff05030509050b051105150517051b05270529052f"
        hex"05510557055d056505770581058f059305950599059f05a705ab05ad05b305bf05c905cb05cf05d105d505db05e705f3"
        hex"05fb0607060d06110617061f0623062b062f063d064106470649064d06530655065b06650679067f06830685069d06a1"
        hex"06a306ad06b906bb06c506cd06d306d906df06f106f706fb06fd07090713071f072707370745074b074f075107550757"
        hex"0761076d07730779078b078d079d079f07b507bb07c307c907cd07cf07d307db07e107eb07ed07f70805080f08150821"
        hex"0823082708290833083f0841085108530859085d085f086908710883089b089f08a508ad08bd08bf08c308cb08db08dd"
        hex"08e108e908ef08f508f909050907091d09230925092b092f093509430949094d094f09550959095f096b097109770985"
        hex"0989098f099b09a309a909ad09c709d909e309eb09ef09f509f709fd0a130a1f0a210a310a390a3d0a490a570a610a63"
        hex"0a670a6f0a750a7b0a7f0a810a850a8b0a930a970a990a9f0aa90aab0ab50abd0ac10acf0ad90ae50ae70aed0af10af3"
        hex"0b030b110b150b1b0b230b290b2d0b3f0b470b510b570b5d0b650b6f0b7b0b890b8d0b930b990b9b0bb70bb90bc30bcb"
        hex"0bcf0bdd0be10be90bf50bfb0c070c0b0c110c250c2f0c310c410c5b0c5f0c610c6d0c730c770c830c890c910c950c9d"
        hex"0cb30cb50cb90cbb0cc70ce30ce50ceb0cf10cf70cfb0d010d030d0f0d130d1f0d210d2b0d2d0d3d0d3f0d4f0d550d69"
        hex"0d790d810d850d870d8b0d8d0da30dab0db70dbd0dc70dc90dcd0dd30dd50ddb0de50de70df30dfd0dff0e090e170e1d"
        hex"0e210e270e2f0e350e3b0e4b0e570e590e5d0e6b0e710e750e7d0e870e8f0e950e9b0eb10eb70eb90ec30ed10ed50edb"
        hex"0eed0eef0ef90f070f0b0f0d0f170f250f290f310f430f470f4d0f4f0f530f590f5b0f670f6b0f7f0f950fa10fa30fa7"
        hex"0fad0fb30fb50fbb0fd10fd30fd90fe90fef0ffb0ffd1003100f101f10211025102b1039103d103f1051106910731079"
        hex"107b1085108710911093109d10a310a510af10b110bb10c110c910e710f110f310fd1105110b11151127112d11391145"
        hex"11471159115f11631169116f11811183118d119b11a111a511a711ab11c311c511d111d711e711ef11f511fb120d121d"
        hex"121f12231229122b12311237124112471253125f127112731279127d128f129712af12b312b512b912bf12c112cd12d1"
        hex"12df12fd1307130d13191327132d1337134313451349134f1357135d13671369136d137b13811387138b13911393139d"
        hex"139f13af13bb13c313d513d913df13eb13ed13f313f913ff141b1421142f1433143b1445144d1459146b146f14711475"
        hex"148d1499149f14a114b114b714bd14cb14d514e314e71505150b15111517151f15251529152b1537153d154115431549"
        hex"155f15651567156b157d157f1583158f15911597159b15b515bb15c115c515cd15d715f716071609160f161316151619"
        hex"161b162516331639163d1645164f16551669166d166f167516931697169f16a916af16b516bd16c316cf16d316d916db"
        hex"16e116e516eb16ed16f716f91709170f1723172717331741175d17631777177b178d1795179b179f17a517b317b917bf"
        hex"17c917cb17d517e117e917f317f517ff18071813181d18351837183b18431849184d1855186718711877187d187f1885"
        hex"188f189b189d18a718ad18b318b918c118c718d118d718d918df18e518eb18f518fd1915191b19311933194519491951"
        hex"195b1979198119931997199919a319a919ab19b119b519c719cf19db19ed19fd1a031a051a111a171a211a231a2d1a2f"
        hex"1a351a3f1a4d1a511a691a6b1a7b1a7d1a871a891a931aa71aab1aad1ab11ab91ac91acf1ad51ad71ae31af31afb1aff"
        hex"1b051b231b251b2f1b311b371b3b1b411b471b4f1b551b591b651b6b1b731b7f1b831b911b9d1ba71bbf1bc51bd11bd7"
        hex"1bd91bef1bf71c091c131c191c271c2b1c2d1c331c3d1c451c4b1c4f1c551c731c811c8b1c8d1c991ca31ca51cb51cb7"
        hex"1cc91ce11cf31cf91d091d1b1d211d231d351d391d3f1d411d4b1d531d5d1d631d691d711d751d7b1d7d1d871d891d95"
        hex"1d991d9f1da51da71db31db71dc51dd71ddb1de11df51df91e011e071e0b1e131e171e251e2b1e2f1e3d1e491e4d1e4f"
        hex"1e6d1e711e891e8f1e951ea11ead1ebb1ec11ec51ec71ecb1edd1ee31eef1ef71efd1f011f0d1f0f1f1b1f391f491f4b"
        hex"1f511f671f751f7b1f851f911f971f991f9d1fa51faf1fb51fbb1fd31fe11fe71feb1ff31fff";

    error ModulusLengthInvalid(uint256 length);
    error ModulusEven();
    error ProofLengthMismatch(uint256 proofLength, uint256 modulusLength);
    error ProofOutOfRange();
    error ProofInvalid();
    error KeySizeInvalid(uint256 modulusLength);
    error ModulusHasSmallFactor(uint256 prime);
    error CertificateLengthInvalid(uint256 length);
    error CertificateRootInvalid(uint256 index);
    error CommitteeSizeZero();
    error NoStake();
    error StakeExceedsTotal(uint256 stake, uint256 totalStake);
    error NotSelected(uint256 round);
    error Selected(uint256 round);
    error PrecompileFailed(address precompile);

    // ------------------------------------------------------------------ RSA-FDH-VRF-SHA256

    /// @notice RSAFDHVRF_verify with e = 65537: the 32-byte beta if `pi` proves `alpha` under
    /// the key whose modulus is I2OSP(n, k) `modulus`; reverts otherwise.
    function verify(bytes memory modulus, bytes memory alpha, bytes memory pi) internal view returns (bytes32 beta) {
        uint256 k = modulus.length;
        if (k < MIN_MODULUS_BYTES || k > MAX_MODULUS_BYTES || uint8(modulus[0]) == 0) {
            revert ModulusLengthInvalid(k);
        }
        if (uint8(modulus[k - 1]) & 1 == 0) revert ModulusEven();
        // Exactly k bytes: a longer encoding of the same integer would hash to another beta.
        if (pi.length != k) revert ProofLengthMismatch(pi.length, k);
        if (!_lessThan(pi, modulus)) revert ProofOutOfRange();
        bytes memory message = _modexp(pi, hex"010001", modulus);
        // EM = MGF1(suite 0x01 || 0x01 || I2OSP(k, 4) || n || alpha, k - 1); m = 0x00 || EM.
        bytes memory encoded = _mgf1(abi.encodePacked(bytes2(0x0101), uint32(k), modulus, alpha), k - 1);
        if (uint8(message[0]) != 0 || keccak256(_tail(message)) != keccak256(encoded)) revert ProofInvalid();
        return proofToHash(pi);
    }

    /// @notice RSAFDHVRF_proof_to_hash: beta = SHA256(0x01 || 0x02 || pi).
    function proofToHash(bytes memory pi) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes2(0x0102), pi));
    }

    // ------------------------------------------------------------------ key certificates

    /// @notice Reverts unless `proof` certifies that x -> x^65537 mod n permutes Z_n^* for the
    /// 2048-bit modulus `modulus`, bound to `owner`, and that n has no prime factor < 2^13.
    function verifyKeyCertificate(bytes memory modulus, address owner, bytes memory proof) internal view {
        if (modulus.length != KEY_BYTES || uint8(modulus[0]) < 0x80) revert KeySizeInvalid(modulus.length);
        if (uint8(modulus[KEY_BYTES - 1]) & 1 == 0) revert ModulusEven();
        uint256 smallFactor = _smallestSmallFactor(modulus);
        if (smallFactor != 0) revert ModulusHasSmallFactor(smallFactor);
        if (proof.length != CERTIFICATE_BYTES) revert CertificateLengthInvalid(proof.length);
        bytes32 context = keccak256(abi.encodePacked(CERTIFICATE_DOMAIN, modulus, PUBLIC_EXPONENT, owner));
        for (uint256 index = 0; index < CHALLENGE_COUNT; index++) {
            bytes memory hashed = new bytes(CHALLENGE_BLOCKS * 32);
            for (uint256 block_ = 0; block_ < CHALLENGE_BLOCKS; block_++) {
                bytes32 word = keccak256(abi.encode(context, index, block_));
                assembly {
                    mstore(add(add(hashed, 32), mul(block_, 32)), word)
                }
            }
            bytes memory challenge = _modexp(hashed, hex"01", modulus);
            bytes memory root = _slice(proof, index * KEY_BYTES, KEY_BYTES);
            if (!_lessThan(root, modulus)) revert CertificateRootInvalid(index);
            if (keccak256(_modexp(root, hex"010001", modulus)) != keccak256(challenge)) {
                revert CertificateRootInvalid(index);
            }
        }
    }

    // ------------------------------------------------------------------ sortition

    /// @notice seed_0 = keccak256(SEED_DOMAIN || uint256 chainId || address task || bytes32 paramsHash).
    function initialSeed(uint256 chainId, address task, bytes32 paramsHash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(SEED_DOMAIN, chainId, task, paramsHash));
    }

    /// @notice seed_r = keccak256(seed_{r-1} || uint256 r || uint256 prevrandao at round start).
    function nextSeed(bytes32 previous, uint256 round, uint256 prevrandao) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(previous, round, prevrandao));
    }

    /// @notice The VRF input of a round: seed_r || uint256 r.
    function roundAlpha(bytes32 seed, uint256 round) internal pure returns (bytes memory) {
        return abi.encodePacked(seed, round);
    }

    /// @notice Partial participation: whether `worker` trains in the round with seed `seed`.
    /// workersPerRound == 0: everyone; otherwise keccak256(seed || worker) % nWorkers <
    /// workersPerRound (protocol.sortition.worker_selected). Each worker is drawn on its own,
    /// so a round has workersPerRound workers on average, not exactly.
    function workerSelected(bytes32 seed, address worker, uint256 workersPerRound, uint256 nWorkers)
        internal
        pure
        returns (bool)
    {
        if (workersPerRound == 0) return true;
        return uint256(keccak256(abi.encodePacked(seed, worker))) % nWorkers < workersPerRound;
    }

    /// @notice beta / 2^256 < min(1, tau * stake / totalStake), exactly: beta * W < tau * w * 2^256
    /// compared as 512-bit products.
    function isSelected(bytes32 beta, uint256 tau, uint256 stake, uint256 totalStake) internal pure returns (bool) {
        if (tau == 0) revert CommitteeSizeZero();
        if (totalStake == 0) revert NoStake();
        if (stake > totalStake) revert StakeExceedsTotal(stake, totalStake);
        (uint256 shareHigh, uint256 shareLow) = _mul512(tau, stake);
        if (shareHigh != 0) return true; // tau * w * 2^256 >= 2^512 > beta * W
        (uint256 drawHigh,) = _mul512(uint256(beta), totalStake);
        return drawHigh < shareLow;
    }

    /// @notice Verify a validator's proof for `round` and that its seat is `seated`; returns its
    /// beta. `seated` true: a committee member's proof (reverts NotSelected otherwise); false: a
    /// proof that the validator is not seated (reverts Selected otherwise; the proof is unique,
    /// so a seated validator has none that passes). The caller must know the modulus was
    /// certified (the registry checks that once).
    /// External: callers reach it by DELEGATECALL to the deployed library (see above).
    function verifySeat(
        bytes memory modulus,
        bytes32 seed,
        uint256 round,
        bytes memory proof,
        uint256 stake,
        uint256 totalStake,
        uint256 tau,
        bool seated
    ) external view returns (bytes32 beta) {
        beta = verify(modulus, roundAlpha(seed, round), proof);
        bool selected = isSelected(beta, tau, stake, totalStake);
        if (seated && !selected) revert NotSelected(round);
        if (!seated && selected) revert Selected(round);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev base^exponent mod modulus through the precompile; the result has modulus.length bytes.
    function _modexp(bytes memory base, bytes memory exponent, bytes memory modulus)
        private
        view
        returns (bytes memory result)
    {
        bytes memory input = abi.encodePacked(base.length, exponent.length, modulus.length, base, exponent, modulus);
        result = new bytes(modulus.length);
        bool ok;
        assembly {
            ok := staticcall(gas(), 0x05, add(input, 32), mload(input), add(result, 32), mload(modulus))
        }
        if (!ok) revert PrecompileFailed(address(0x05));
    }

    /// @dev RFC 8017 MGF1 with SHA-256.
    function _mgf1(bytes memory seed, uint256 maskLength) private pure returns (bytes memory mask) {
        uint256 blocks = (maskLength + 31) / 32;
        mask = new bytes(blocks * 32);
        bytes memory input = abi.encodePacked(seed, uint32(0));
        uint256 counterAt = input.length - 1;
        for (uint256 counter = 0; counter < blocks; counter++) {
            input[counterAt] = bytes1(uint8(counter)); // blocks <= 16, so only the last byte moves
            bytes32 digest = sha256(input);
            assembly {
                mstore(add(add(mask, 32), mul(counter, 32)), digest)
            }
        }
        assembly {
            mstore(mask, maskLength) // drop the surplus of the last block
        }
    }

    /// @dev a < b for big-endian byte strings of equal length (>= 32).
    function _lessThan(bytes memory a, bytes memory b) private pure returns (bool) {
        uint256 length = a.length;
        uint256 offset = 0;
        for (; offset + 32 <= length; offset += 32) {
            (uint256 left, uint256 right) = (_word(a, offset), _word(b, offset));
            if (left != right) return left < right;
        }
        if (offset == length) return false;
        // Last partial word: re-read the final 32 bytes; the overlap was equal.
        (uint256 lastLeft, uint256 lastRight) = (_word(a, length - 32), _word(b, length - 32));
        return lastLeft < lastRight;
    }

    function _word(bytes memory data, uint256 offset) private pure returns (uint256 word) {
        assembly {
            word := mload(add(add(data, 32), offset))
        }
    }

    /// @dev data[1:], copied.
    function _tail(bytes memory data) private pure returns (bytes memory) {
        return _slice(data, 1, data.length - 1);
    }

    /// @dev data[start:start + length], copied a word at a time (new bytes rounds up to 32).
    function _slice(bytes memory data, uint256 start, uint256 length) private pure returns (bytes memory out) {
        out = new bytes(length);
        for (uint256 offset = 0; offset < length; offset += 32) {
            uint256 word = _word(data, start + offset);
            assembly {
                mstore(add(add(out, 32), offset), word)
            }
        }
    }

    /// @dev The smallest prime below 2^13 dividing `modulus` (length a multiple of 32), or 0.
    /// One assembly loop: through legacy codegen the same logic cost ~1.3M gas, here ~0.1M.
    function _smallestSmallFactor(bytes memory modulus) private pure returns (uint256 factor) {
        bytes memory primes = SMALL_PRIMES;
        assembly {
            let cursor := add(primes, 32)
            let end := add(cursor, mload(primes))
            for {} and(lt(cursor, end), iszero(factor)) {} {
                // A batch of primes (each < 2^13) whose product stays below 2^256 ...
                let first := cursor
                let product := 1
                for {} and(lt(cursor, end), lt(product, shl(243, 1))) { cursor := add(cursor, 2) } {
                    product := mul(product, shr(240, mload(cursor)))
                }
                // ... reduces n once (Horner over its 32-byte words, 2^256 mod product as base) ...
                let base := addmod(mod(not(0), product), 1, product)
                let remainder := 0
                let word := add(modulus, 32)
                for { let last := add(word, mload(modulus)) } lt(word, last) { word := add(word, 32) } {
                    remainder := addmod(mulmod(remainder, base, product), mload(word), product)
                }
                // ... and each prime of the batch divides n iff it divides that remainder.
                for { let at := first } lt(at, cursor) { at := add(at, 2) } {
                    let prime := shr(240, mload(at))
                    if iszero(mod(remainder, prime)) {
                        factor := prime
                        break
                    }
                }
            }
        }
    }

    /// @dev The full 512-bit product a * b as (high, low).
    function _mul512(uint256 a, uint256 b) private pure returns (uint256 high, uint256 low) {
        uint256 full;
        assembly {
            full := mulmod(a, b, not(0))
            low := mul(a, b)
            high := sub(sub(full, low), lt(full, low))
        }
    }
}
